//! How a training step is shared among processes: which rows of each batch this process
//! computes, how the processes' losses add up, and the update — gradient clipping by the global
//! norm and AdamW — with the optimizer state wherever it lives. The trainer only talks to this
//! seam; [`OneProcess`] is the whole step in this process, and herd-parallel's data parallelism
//! implements it over MPI from outside (the trainer never learns about ranks).

use std::collections::HashMap;
use std::ops::Range;

use candle_core::Tensor;

use crate::adamw::{AdamW, AdamWConfig};
use crate::error::Result;
use crate::params::Parameters;
use crate::step::clip_grad_norm;

/// One optimizer step's work as the processes of a run share it. Every process calls the same
/// methods in the same order (some are collectives).
pub trait StepSharing {
    /// The rows of a batch of `rows` this process computes.
    fn rows(&self, rows: usize) -> Result<Range<usize>>;

    /// The batch's mean loss from this process's share of it (the sum over processes).
    fn total_loss(&self, share: f64) -> Result<f64>;

    /// Clips the gradients by their global norm to `max_norm` and applies AdamW at `lr` — unless
    /// `loss` or the norm is not finite, when nothing changes. `grads` are this process's share
    /// of the batch's mean gradient, in parameter order. Returns the norm before clipping.
    fn update(
        &mut self,
        params: &Parameters,
        grads: Vec<Tensor>,
        lr: f64,
        max_norm: f64,
        loss: f64,
    ) -> Result<f64>;

    /// The whole optimizer state as [`AdamW::state`] names it, whatever the sharing (so a
    /// checkpoint resumes under any other).
    fn optimizer_state(&self, params: &Parameters) -> Result<HashMap<String, Tensor>>;

    /// Restores a state saved by [`StepSharing::optimizer_state`] after `steps` updates.
    fn restore(
        &mut self,
        params: &Parameters,
        state: &HashMap<String, Tensor>,
        steps: u64,
    ) -> Result<()>;

    /// Whether this process writes the run's files (metrics, checkpoints, models): exactly one
    /// process of a run does.
    fn writes_files(&self) -> bool;

    /// Whether every process's `ok` is true; returns once every process has called it (so the
    /// others then read what the writer wrote, or all stop when one could not go on).
    fn all_succeeded(&self, ok: bool) -> Result<bool>;
}

/// The whole step in this process: every row, the full AdamW state.
pub struct OneProcess {
    optimizer: AdamW,
}

impl OneProcess {
    /// Zero AdamW moments for `params`.
    pub fn new(params: &Parameters, config: AdamWConfig) -> Result<OneProcess> {
        Ok(OneProcess {
            optimizer: AdamW::new(params, config)?,
        })
    }
}

impl StepSharing for OneProcess {
    fn rows(&self, rows: usize) -> Result<Range<usize>> {
        Ok(0..rows)
    }

    fn total_loss(&self, share: f64) -> Result<f64> {
        Ok(share)
    }

    fn update(
        &mut self,
        params: &Parameters,
        mut grads: Vec<Tensor>,
        lr: f64,
        max_norm: f64,
        loss: f64,
    ) -> Result<f64> {
        let norm = clip_grad_norm(&mut grads, max_norm)?;
        if loss.is_finite() && norm.is_finite() {
            self.optimizer.step(params, &grads, lr)?;
        }
        Ok(norm)
    }

    fn optimizer_state(&self, params: &Parameters) -> Result<HashMap<String, Tensor>> {
        Ok(self.optimizer.state(params))
    }

    fn restore(
        &mut self,
        params: &Parameters,
        state: &HashMap<String, Tensor>,
        steps: u64,
    ) -> Result<()> {
        self.optimizer.restore(params, state, steps)
    }

    fn writes_files(&self) -> bool {
        true
    }

    fn all_succeeded(&self, ok: bool) -> Result<bool> {
        Ok(ok)
    }
}

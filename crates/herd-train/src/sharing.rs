//! How a training step is shared among processes: which rows of each batch this process
//! computes, how the processes' losses add up, and the update — gradient clipping by the global
//! norm and AdamW — with the optimizer state wherever it lives. The trainer only talks to this
//! seam; [`OneProcess`] is the whole step in this process, and herd-parallel's data parallelism
//! implements it over MPI from outside (the trainer never learns about ranks).

use std::ops::Range;
use std::path::Path;

use candle_core::Tensor;

use crate::adamw::{AdamW, AdamWConfig};
use crate::checkpoint;
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

    /// Writes this process's part of the optimizer state into the pending checkpoint folder
    /// `dir`: the whole state (`optimizer.safetensors`) or its slices (a file per process);
    /// see [`crate::checkpoint`].
    fn save_optimizer(&self, params: &Parameters, dir: &Path) -> Result<()>;

    /// Restores the optimizer state of the checkpoint in `dir`, after `steps` updates,
    /// whatever sharing wrote it.
    fn restore(&mut self, params: &Parameters, dir: &Path, steps: u64) -> Result<()>;

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

    fn save_optimizer(&self, params: &Parameters, dir: &Path) -> Result<()> {
        checkpoint::save_optimizer(dir, &self.optimizer.state(params))
    }

    fn restore(&mut self, params: &Parameters, dir: &Path, steps: u64) -> Result<()> {
        let state = checkpoint::load_optimizer(dir, params)?;
        self.optimizer.restore(params, &state, steps)
    }

    fn writes_files(&self) -> bool {
        true
    }

    fn all_succeeded(&self, ok: bool) -> Result<bool> {
        Ok(ok)
    }
}

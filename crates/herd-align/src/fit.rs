//! The loop every post-training stage shares (SFT, reward model, DPO): each step draws its
//! examples, the stage's [`Objective`] gives loss and gradients, which are clipped and applied
//! by AdamW at the scheduled rate; metrics, held-out evaluation and checkpoints as in
//! pretraining (`herd_train::checkpoint`), so `--resume` continues exactly.
//!
//! The examples of step `s` are a function of the seed and `s` alone (a fresh permutation of
//! the data per epoch), so a resumed run needs nothing but the step to draw the same ones.

use std::path::Path;
use std::time::Instant;

use candle_core::Tensor;
use herd_train::adamw::{AdamW, AdamWConfig};
use herd_train::checkpoint::{self, Checkpoint, TrainerState};
use herd_train::metrics::{MetricsLog, StepMetrics};
use herd_train::params::Parameters;
use herd_train::schedule::LrSchedule;
use herd_train::step::clip_grad_norm;
use herd_train::trainer::progress_bar;
use herd_train::{RunOptions, RunSummary};
use herd_util::seeded::shuffle;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Steps in a row with a non-finite loss or gradient before a run gives up.
const MAX_BAD_STEPS_IN_A_ROW: u32 = 8;

/// How a stage trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimizer steps.
    pub steps: u64,
    /// Examples per step: conversations (SFT) or preference pairs (reward model, DPO).
    pub batch: usize,
    /// Examples per forward/backward pass (gradient accumulation over the batch).
    pub micro_batch: usize,
    /// Tokens per packed row; longer sequences are cut.
    pub seq_len: usize,
    /// Peak learning rate (paper: 1e-5 for SFT and DPO at 405B scale).
    pub lr: f64,
    /// Floor of the cosine decay.
    pub min_lr: f64,
    /// Steps of linear warmup.
    pub warmup_steps: u64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip.
    pub grad_clip: f64,
    /// Evaluate the held-out set every this many steps (and at the end).
    pub eval_every: u64,
    /// Checkpoint every this many steps (and at the end).
    pub checkpoint_every: u64,
    /// Checkpoints kept.
    pub keep_last: usize,
    /// Seed of the data order.
    pub seed: u64,
}

impl TrainConfig {
    /// Checks every setting against what makes sense for it (a NaN or negative rate, a zero
    /// batch or sequence length), naming the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        use herd_util::check::{at_least, finite_above, finite_at_least, finite_within, within};
        within("steps", self.steps, 1, 1 << 40)?;
        within("batch", self.batch, 1, 1 << 20)?;
        within("micro_batch", self.micro_batch, 1, 1 << 20)?;
        within("seq_len", self.seq_len, 2, 1 << 24)?;
        finite_above("lr", self.lr, 0.0)?;
        finite_within("min_lr", self.min_lr, 0.0, self.lr)?;
        within("warmup_steps", self.warmup_steps, 0, self.steps)?;
        finite_at_least("weight_decay", self.weight_decay, 0.0)?;
        finite_above("grad_clip", self.grad_clip, 0.0)?;
        at_least("eval_every", self.eval_every, 1)?;
        at_least("checkpoint_every", self.checkpoint_every, 1)?;
        at_least("keep_last", self.keep_last, 1)
    }

    /// The schedule: warmup, then cosine to `min_lr` at the last step.
    pub fn schedule(&self) -> LrSchedule {
        LrSchedule {
            peak_lr: self.lr,
            min_lr: self.min_lr,
            warmup_steps: self.warmup_steps,
            decay_steps: self.steps,
            total_steps: self.steps,
            anneal_steps: 0,
        }
    }

    /// AdamW with the paper's moments and this stage's weight decay.
    pub fn optimizer(&self) -> AdamWConfig {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: self.weight_decay,
        }
    }
}

/// One step's result.
pub struct StepOutput {
    /// Mean loss of the step.
    pub loss: f64,
    /// Its gradients, in parameter order.
    pub grads: Vec<Tensor>,
    /// Tokens processed (padding excluded).
    pub tokens: usize,
    /// Packed rows processed.
    pub rows: usize,
    /// What else the stage reports (accuracy, margins).
    pub stats: Vec<(&'static str, f64)>,
}

/// A held-out evaluation.
pub struct Evaluation {
    /// Mean held-out loss.
    pub loss: f64,
    /// What else (accuracy, margins); logged with a `val_` prefix.
    pub stats: Vec<(&'static str, f64)>,
}

/// What a stage computes.
pub trait Objective {
    /// How many training examples there are.
    fn examples(&self) -> usize;
    /// Loss and gradients of the examples `items`.
    fn step(&mut self, params: &Parameters, items: &[usize]) -> Result<StepOutput>;
    /// The held-out evaluation (`None` without held-out data).
    fn evaluate(&mut self, params: &Parameters) -> Result<Option<Evaluation>>;
}

/// The examples of (0-based) `step`: positions `step·batch …` of the sequence of epochs, each
/// epoch a permutation of `0..n` drawn from `seed` and the epoch number.
pub fn items_for_step(seed: u64, step: u64, batch: usize, n: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(batch);
    let mut current: Option<(u64, Vec<usize>)> = None;
    for i in step * batch as u64..(step + 1) * batch as u64 {
        let epoch = i / n as u64;
        if current.as_ref().is_none_or(|(e, _)| *e != epoch) {
            current = Some((epoch, permutation(seed ^ epoch.wrapping_mul(0x9E37), n)));
        }
        let (_, order) = current.as_ref().expect("set above");
        out.push(order[(i % n as u64) as usize]);
    }
    out
}

/// A Fisher–Yates shuffle of `0..n` from a splitmix64 stream.
fn permutation(seed: u64, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, &mut seed.clone());
    order
}

/// Trains `params` with `objective` as `config` says, writing the run to `options.out`:
/// `checkpoints/`, `metrics.jsonl` (a step-0 line holds the evaluation before training) and
/// the model as an HF folder in `final/` (with `tokenizer` copied in).
pub fn fit(
    objective: &mut dyn Objective,
    params: &Parameters,
    config: &TrainConfig,
    options: &RunOptions,
    tokenizer: &Path,
) -> Result<RunSummary> {
    config.validate().map_err(Error::Invalid)?;
    let n = objective.examples();
    if n == 0 {
        return Err(Error::Invalid("no training examples".into()));
    }
    let device = params.vars()[0].device().clone();
    let out = &options.out;
    let ckpt_root = out.join("checkpoints");
    let mut optimizer = AdamW::new(params, config.optimizer())?;
    let mut state = TrainerState::default();
    // The stage claimed `out` (`herd_train::checkpoint::open_run`): checkpoints there are this
    // run's, from the same model, data and settings.
    if let Some(&step) = checkpoint::list_steps(&ckpt_root)?.last() {
        let loaded = checkpoint::load(&checkpoint::step_dir(&ckpt_root, step), &device)?;
        params.set_values(&loaded.weights)?;
        optimizer.restore(params, &loaded.optimizer, loaded.state.step)?;
        state = loaded.state;
    }
    let mut metrics = MetricsLog::open(&out.join("metrics.jsonl"), state.step)?;
    if state.step == 0 {
        if let Some(before) = objective.evaluate(params)? {
            metrics.log(&evaluation_line(0, f64::NAN, &before))?;
        }
    }
    let schedule = config.schedule();
    let stop = options.max_steps.unwrap_or(config.steps).min(config.steps);
    let bar = progress_bar(options.progress, state.step, stop);
    let (mut last_loss, mut val_loss) = (None, None);
    for step in state.step..stop {
        let items = items_for_step(config.seed, step, config.batch, n);
        let started = Instant::now();
        let mut output = objective.step(params, &items)?;
        let grad_norm = clip_grad_norm(&mut output.grads, config.grad_clip)?;
        let lr = schedule.lr(step);
        let finite = output.loss.is_finite() && grad_norm.is_finite();
        if finite {
            optimizer.step(params, &output.grads, lr)?;
            state.bad_in_a_row = 0;
        } else {
            state.skipped_steps += 1;
            state.bad_in_a_row += 1;
        }
        state.step = step + 1;
        state.tokens += output.tokens as u64;
        let tokens_per_s = output.tokens as f64 / started.elapsed().as_secs_f64();
        let mut line = StepMetrics {
            step: state.step,
            loss: output.loss,
            lr,
            grad_norm,
            seq_len: config.seq_len,
            batch_rows: output.rows,
            tokens: state.tokens,
            tokens_per_s,
            skipped: !finite,
            extra: output
                .stats
                .iter()
                .map(|(k, v)| (k.to_string(), Some(*v)))
                .collect(),
            ..StepMetrics::default()
        };
        if state.step.is_multiple_of(config.eval_every.max(1)) || state.step == config.steps {
            if let Some(eval) = objective.evaluate(params)? {
                line.val_loss = Some(eval.loss);
                line.extra.extend(val_stats(&eval));
                val_loss = Some(eval.loss);
            }
        }
        metrics.log(&line)?;
        last_loss = Some(output.loss);
        bar.set_position(state.step);
        bar.set_message(progress_message(&line));
        if state.bad_in_a_row > MAX_BAD_STEPS_IN_A_ROW {
            return Err(Error::Invalid(format!(
                "step {}: {} steps in a row had a non-finite loss or gradient; lower the learning rate",
                state.step, state.bad_in_a_row
            )));
        }
        if state.step.is_multiple_of(config.checkpoint_every.max(1)) || state.step == stop {
            let ckpt = Checkpoint {
                config: params.config(),
                weights: &params.weights(),
                optimizer: optimizer.state(params),
                state: &state,
                tokenizer,
            };
            checkpoint::save(&ckpt_root, &ckpt, config.keep_last)?;
        }
    }
    bar.finish();
    let done = state.step == config.steps;
    if done {
        checkpoint::save_model(
            &out.join("final"),
            params.config(),
            &params.weights(),
            tokenizer,
        )?;
    }
    Ok(RunSummary {
        steps: state.step,
        last_loss,
        val_loss,
        final_model: done.then(|| out.join("final")),
        skipped_steps: state.skipped_steps,
    })
}

/// The evaluation's statistics with a `val_` prefix.
fn val_stats(eval: &Evaluation) -> impl Iterator<Item = (String, Option<f64>)> + '_ {
    eval.stats
        .iter()
        .map(|(k, v)| (format!("val_{k}"), Some(*v)))
}

/// The metrics line of an evaluation alone (step 0: before training).
fn evaluation_line(step: u64, loss: f64, eval: &Evaluation) -> StepMetrics {
    StepMetrics {
        step,
        loss,
        val_loss: Some(eval.loss),
        extra: val_stats(eval).collect(),
        ..StepMetrics::default()
    }
}

fn progress_message(line: &StepMetrics) -> String {
    let mut text = format!("loss {:.3}", line.loss);
    if let Some(v) = line.val_loss {
        text += &format!(" (val {v:.3})");
    }
    for (k, v) in &line.extra {
        if let Some(v) = v {
            text += &format!(" · {k} {v:.3}");
        }
    }
    text + &format!(" · {:.0} tok/s", line.tokens_per_s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_epoch_visits_every_example_once_in_a_new_order() {
        let n = 10;
        let epoch = |e: u64| -> Vec<usize> {
            (0..5)
                .flat_map(|s| items_for_step(3, e * 5 + s, 2, n))
                .collect()
        };
        let (first, second) = (epoch(0), epoch(1));
        for e in [&first, &second] {
            let mut sorted = e.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..n).collect::<Vec<_>>());
        }
        assert_ne!(first, second);
        // A batch across an epoch boundary.
        assert_eq!(items_for_step(3, 3, 3, n)[0], first[9]);
        assert_eq!(items_for_step(3, 3, 3, n)[1..], second[..2]);
    }
}

//! The pretraining loop (`herd pretrain`): for each step, the stage's batch from the loader, loss
//! and gradients over micro-batches, clipping, AdamW at the scheduled rate; then metrics,
//! validation, checkpoints, and at the end the final model (the average of the last annealing
//! checkpoints when the recipe anneals).
//!
//! A run resumes from its newest checkpoint and then computes exactly what the uninterrupted
//! run would have: the loader's cursor, the optimizer's moments and the step come back, and
//! nothing else carries state (initialisation and data order are functions of the seed).
//!
//! How the step is shared among processes is a [`StepSharing`] given from outside: every process
//! reads the same batches, computes its rows, and the sharing combines losses and gradients and
//! updates the parameters; one process writes the run's files. When the model's layers are split
//! among processes (tensor parallelism, [`herd_model::split`]), each holds its part of the
//! parameters, and whole weights are gathered for every file written, so files do not depend on
//! the split; when every row is (context parallelism), each computes its part of the rows'
//! tokens. Every process of a split then computes validation losses too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device};
use herd_model::split::Parts;
use herd_model::Llama;
use indicatif::{ProgressBar, ProgressStyle};

use crate::adamw::AdamWConfig;
use crate::average::average_checkpoints;
use crate::checkpoint::{self, TrainerState};
use crate::error::{Error, Result};
use crate::loader::{Batch, Loader};
use crate::metrics::{MetricsLog, StepMetrics};
use crate::params::Parameters;
use crate::pipeline::{self, Stages};
use crate::recipe::Recipe;
use crate::schedule::stage_at;
use crate::sharing::{OneProcess, StepSharing};
use crate::step::{evaluate, loss_and_grads_of_share, Gradients};

/// How to run a recipe.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Output folder: `checkpoints/`, `anneal/`, `final/`, `metrics.jsonl`.
    pub out: PathBuf,
    /// Stop after this step (a checkpoint is written there); `None` runs the recipe to its end.
    pub max_steps: Option<u64>,
    /// Continue from the newest checkpoint in `out` (which must hold a run of the same recipe
    /// and data).
    pub resume: bool,
    /// Delete `out` when it holds an earlier run, and start again.
    pub overwrite: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Steps completed (over all sessions of the run).
    pub steps: u64,
    /// Loss of the last step run.
    pub last_loss: Option<f64>,
    /// Last validation loss.
    pub val_loss: Option<f64>,
    /// The final model, when the recipe ran to its end.
    pub final_model: Option<PathBuf>,
    /// Steps skipped for non-finite values.
    pub skipped_steps: u64,
}

/// How the model and its rows are split among a run's processes, given from outside (herd-parallel).
#[derive(Debug, Clone, Default)]
pub struct ModelSplit {
    /// The model's layers split into parts (tensor parallelism, [`herd_model::split`]).
    pub layers: Option<Arc<dyn Parts>>,
    /// Every row's tokens split into parts (context parallelism,
    /// [`herd_model::context_columns`]).
    pub sequence: Option<Arc<dyn Parts>>,
    /// The blocks cut into stages (pipeline parallelism, [`crate::pipeline`]).
    pub stages: Option<Arc<dyn Stages>>,
}

impl ModelSplit {
    /// This process's parameters of a model shaped as `params` (whole): its tensor-parallel
    /// part's slices of its stage's tensors.
    fn parameters(&self, params: Parameters) -> Result<Parameters> {
        let params = params.split_by(self.layers.clone())?;
        match &self.stages {
            Some(stages) => {
                let layers = pipeline::layers_of(params.config(), stages.as_ref())?;
                params.stages(&layers)
            }
            None => Ok(params),
        }
    }

    /// The whole model's current weights on the process that writes files: gathered over the
    /// tensor-parallel parts, then from every stage (a collective: every process calls it).
    fn whole_weights(&self, params: &Parameters) -> Result<herd_model::Weights> {
        let weights = params.whole_weights()?;
        match &self.stages {
            Some(stages) => {
                pipeline::gather_on_first_stage(params.config(), weights, stages.as_ref())
            }
            None => Ok(weights),
        }
    }

    /// `batch`'s share of the loss and gradients on this process, whose stages are `models`
    /// (the whole model as one, unless the blocks are cut into stages).
    fn loss_and_grads(
        &self,
        models: &[Llama],
        params: &Parameters,
        work: (&Batch, usize, usize),
    ) -> Result<Gradients> {
        let sequence = self.sequence.as_ref();
        match (&self.stages, models) {
            (Some(stages), _) => {
                pipeline::loss_and_grads_of_share(models, params, work, sequence, stages.as_ref())
            }
            (None, [model]) => {
                let (batch, micro_rows, n_targets) = work;
                loss_and_grads_of_share(model, params, batch, micro_rows, n_targets, sequence)
            }
            (None, _) => Err(Error::Data("several stages without a pipeline".into())),
        }
    }

    /// The mean validation loss of `batch` under `models` (frozen; as in
    /// [`ModelSplit::loss_and_grads`]).
    fn evaluate(&self, models: &[Llama], batch: &Batch, micro_rows: usize) -> Result<f64> {
        let sequence = self.sequence.as_ref();
        match (&self.stages, models) {
            (Some(stages), _) => {
                pipeline::evaluate(models, batch, micro_rows, sequence, stages.as_ref())
            }
            (None, [model]) => evaluate(model, batch, micro_rows, sequence),
            (None, _) => Err(Error::Data("several stages without a pipeline".into())),
        }
    }

    /// Whether any part of the model or of its rows is on another process.
    fn is_split(&self) -> bool {
        self.layers.is_some() || self.sequence.is_some() || self.stages.is_some()
    }
}

/// Makes a run's [`StepSharing`] for its parameters and AdamW settings.
pub type SharingFactory<'a> =
    dyn Fn(&Parameters, AdamWConfig) -> Result<Box<dyn StepSharing + 'a>> + 'a;

/// Writes the checkpoint of `state.step`: the writer makes its folder, every process writes
/// its part of the optimizer state into it, the writer the model and the trainer's state, and
/// once every process has succeeded the writer renames it into place.
fn save_checkpoint(
    recipe: &Recipe,
    root: &Path,
    (params, split): (&Parameters, &ModelSplit),
    state: &TrainerState,
    sharing: &dyn StepSharing,
) -> Result<()> {
    let writer = sharing.writes_files();
    // Every process takes part in gathering a split model's weights; the writer writes them.
    let weights = split.whole_weights(params)?;
    let began = match writer {
        true => checkpoint::begin(root, state.step).map(|_| ()),
        false => Ok(()),
    };
    agree(sharing, began, "start the checkpoint")?;
    let pending = checkpoint::pending_dir(root, state.step);
    let wrote = sharing
        .save_optimizer(params, &pending)
        .and_then(|()| match writer {
            true => checkpoint::write_model_and_state(
                &pending,
                &recipe.model,
                &weights,
                &recipe.tokenizer,
                state,
            ),
            false => Ok(()),
        });
    agree(sharing, wrote, "write its part of the checkpoint")?;
    if writer {
        checkpoint::commit(root, state.step, recipe.checkpoint.keep_last)?;
    }
    Ok(())
}

/// Returns `result`'s error, or an error if another process's `result` failed, once every
/// process has said how it went (so none goes on alone).
fn agree(sharing: &dyn StepSharing, result: Result<()>, what: &str) -> Result<()> {
    if sharing.all_succeeded(result.is_ok())? {
        return Ok(());
    }
    result?;
    Err(Error::Sharing(format!(
        "another process could not {what} (its error says why)"
    )))
}

/// Runs (or resumes) `recipe` in this process.
pub fn pretrain(recipe: &Recipe, options: &RunOptions) -> Result<RunSummary> {
    pretrain_shared(recipe, options, ModelSplit::default(), &|params, config| {
        Ok(Box::new(OneProcess::new(params, config)?))
    })
}

/// Runs (or resumes) `recipe` as one of the processes that `sharing` makes share each step,
/// holding the part of the model's layers and of every row that `split` says.
pub fn pretrain_shared(
    recipe: &Recipe,
    options: &RunOptions,
    split: ModelSplit,
    sharing: &SharingFactory<'_>,
) -> Result<RunSummary> {
    let device = Device::Cpu;
    let out = &options.out;
    let mut loader = Loader::open(
        &recipe.data.sources,
        recipe.seed,
        recipe.data.validation_fraction,
    )?;
    check_vocabulary(recipe, &loader)?;
    let fingerprint = serde_json::json!({
        "recipe": recipe.fingerprint,
        "data": loader.data_fingerprint(),
        "tokenizer": herd_util::fingerprint::of_file(&recipe.tokenizer)?,
    });
    // The sharing needs the parameters' shapes only; their values come once it is known whether
    // a checkpoint holds them (no random draws for a run that resumes).
    let mut params = split.parameters(Parameters::zeros(&recipe.model, DType::F32, &device)?)?;
    let mut sharing = sharing(&params, recipe.optimizer.clone())?;
    let writer = sharing.writes_files();
    // From here on `out` holds this run (fresh, or resumed with the same recipe and data); the
    // other processes read it once the writer has made it so.
    let opened = match writer {
        true => checkpoint::open_run(options, "pretrain", &fingerprint),
        false => Ok(()),
    };
    agree(sharing.as_ref(), opened, &format!("open {}", out.display()))?;
    let ckpt_root = out.join("checkpoints");
    let existing = checkpoint::list_steps(&ckpt_root)?;
    let mut state = match existing.last() {
        Some(&step) => {
            let dir = checkpoint::step_dir(&ckpt_root, step);
            let (weights, state) = checkpoint::load_model_and_state(&dir, &device)?;
            params.set_values(&weights)?;
            sharing.restore(&params, &dir, state.step)?;
            loader.set_cursor(state.cursor.clone())?;
            state
        }
        None => {
            let init = Parameters::init(&recipe.model, recipe.seed, DType::F32, &device)?;
            params = split.parameters(init)?;
            TrainerState {
                cursor: loader.cursor().clone(),
                ..TrainerState::default()
            }
        }
    };
    let mut metrics = match writer {
        true => Some(MetricsLog::open(&out.join("metrics.jsonl"), state.step)?),
        false => None,
    };
    let total = recipe.lr.total_steps;
    let stop = options.max_steps.unwrap_or(total).min(total);
    let models = params.models()?;
    let bar = progress_bar(options.progress && writer, state.step, stop);
    let mut validation: HashMap<usize, Option<Batch>> = HashMap::new();
    let (mut last_loss, mut val_loss) = (None, None);
    for step in state.step..stop {
        let stage = stage_at(&recipe.training.stages, step).clone();
        let batch = loader.next_batch(stage.batch_rows, stage.seq_len, &recipe.mix_at(step));
        let started = Instant::now();
        let rows = sharing.rows(batch.rows)?;
        let slice = (rows.len() < batch.rows).then(|| batch.slice(rows.start, rows.len()));
        let share = slice.as_ref().unwrap_or(&batch);
        let (micro, n_targets) = (recipe.training.micro_batch_rows, batch.n_targets());
        let g = split.loss_and_grads(&models, &params, (share, micro, n_targets))?;
        let loss = sharing.total_loss(g.loss)?;
        let lr = recipe.lr.lr(step);
        let grad_norm = sharing.update(&params, g.grads, lr, recipe.grad_clip, loss)?;
        let finite = loss.is_finite() && grad_norm.is_finite();
        if finite {
            state.bad_in_a_row = 0;
        } else {
            state.skipped_steps += 1;
            state.bad_in_a_row += 1;
        }
        let tokens = (stage.batch_rows * stage.seq_len) as u64;
        state.step = step + 1;
        state.tokens += tokens;
        state.cursor = loader.cursor().clone();
        let seconds = started.elapsed().as_secs_f64();
        let tokens_per_s = tokens as f64 / seconds;
        let mut line = StepMetrics {
            step: state.step,
            loss,
            lr,
            grad_norm,
            seq_len: stage.seq_len,
            batch_rows: stage.batch_rows,
            tokens: state.tokens,
            tokens_per_s,
            mfu: tokens_per_s * recipe.flops_per_token(stage.seq_len)
                / (recipe.training.peak_gflops * 1e9),
            val_loss: None,
            skipped: !finite,
            extra: Default::default(),
        };
        let validates = state.step.is_multiple_of(recipe.eval.every) || state.step == total;
        // A split model's or sequence's validation loss takes every part.
        if (writer || split.is_split()) && validates {
            let val = validation
                .entry(stage.seq_len)
                .or_insert_with(|| loader.validation_batch(recipe.eval.rows, stage.seq_len));
            if let Some(val) = val {
                let frozen = params.frozen_models()?;
                let micro = recipe.training.micro_batch_rows;
                line.val_loss = Some(split.evaluate(&frozen, val, micro)?);
                val_loss = line.val_loss;
            }
        }
        if let Some(metrics) = metrics.as_mut() {
            metrics.log(&line)?;
        }
        last_loss = Some(loss);
        bar.set_position(state.step);
        bar.set_message(format!(
            "loss {:.3}{} · {:.0} tok/s · lr {lr:.2e}",
            loss,
            line.val_loss
                .map(|v| format!(" (val {v:.3})"))
                .unwrap_or_default(),
            tokens_per_s
        ));
        if state.bad_in_a_row > recipe.training.max_bad_steps_in_a_row {
            return Err(Error::Diverged(format!(
                "step {}: {} steps in a row had a non-finite loss or gradient (last loss {}); \
                 lower the learning rate or resume from an earlier checkpoint",
                state.step, state.bad_in_a_row, loss
            )));
        }
        if let Some(anneal) = &recipe.anneal {
            let into_annealing = (state.step + anneal.steps).saturating_sub(total);
            if into_annealing > 0 && into_annealing.is_multiple_of(anneal.checkpoint_every) {
                let dir = out.join("anneal").join(format!("step-{:08}", state.step));
                let weights = split.whole_weights(&params)?;
                if writer {
                    checkpoint::save_model(&dir, &recipe.model, &weights, &recipe.tokenizer)?;
                }
                if !state.anneal_checkpoints.contains(&dir) {
                    state.anneal_checkpoints.push(dir);
                }
            }
        }
        if state.step.is_multiple_of(recipe.checkpoint.every) || state.step == stop {
            let model_split = (&params, &split);
            save_checkpoint(recipe, &ckpt_root, model_split, &state, sharing.as_ref())?;
        }
    }
    bar.finish();
    if state.step == total {
        let last = split.whole_weights(&params)?;
        if writer {
            write_final(recipe, &last, &state, &out.join("final"), &device)?;
        }
    }
    Ok(RunSummary {
        steps: state.step,
        last_loss,
        val_loss,
        final_model: (state.step == total).then(|| out.join("final")),
        skipped_steps: state.skipped_steps,
    })
}

/// The final model: the mean of the last annealing checkpoints, or the `last` weights.
fn write_final(
    recipe: &Recipe,
    last_weights: &herd_model::Weights,
    state: &TrainerState,
    dir: &Path,
    device: &Device,
) -> Result<()> {
    let keep = recipe.anneal.as_ref().map_or(0, |a| a.average_last);
    let last: Vec<&Path> = state
        .anneal_checkpoints
        .iter()
        .rev()
        .take(keep)
        .rev()
        .map(PathBuf::as_path)
        .collect();
    if last.is_empty() {
        return checkpoint::save_model(dir, &recipe.model, last_weights, &recipe.tokenizer);
    }
    let (config, mean) = average_checkpoints(&last, device)?;
    checkpoint::save_model(dir, &config, &mean, &recipe.tokenizer)
}

/// Shards, tokenizer and model must agree on the vocabulary.
fn check_vocabulary(recipe: &Recipe, loader: &Loader) -> Result<()> {
    let model = recipe.model.vocab_size;
    let shards = loader.vocab_size() as usize;
    if shards > model {
        return Err(Error::Data(format!(
            "the shards use a vocabulary of {shards} ids but the model has {model}: \
             were they tokenized with {}?",
            recipe.tokenizer.display()
        )));
    }
    if !recipe.tokenizer.is_file() {
        return Err(Error::Data(format!(
            "{}: no such tokenizer file (the recipe's `tokenizer`)",
            recipe.tokenizer.display()
        )));
    }
    Ok(())
}

/// A step bar with elapsed time and ETA (hidden when `show` is false), at `position` of `stop`.
pub fn progress_bar(show: bool, position: u64, stop: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(stop);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} step {pos}/{len} [{elapsed_precise} < {eta_precise}] {wide_bar} {msg}",
        )
        .expect("template"),
    );
    bar.set_position(position);
    bar.reset_eta();
    bar
}

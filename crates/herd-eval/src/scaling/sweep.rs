//! The IsoFLOP sweep (paper §3.2.1): for each compute budget C and model shape, a pretraining
//! run of `C / (6·N)` tokens, where N is the shape's training FLOPs per token over 6 (its
//! matmul parameters plus attention's share), so that every run of a budget spends the same
//! compute. Each run is an ordinary `herd pretrain` run of a recipe derived from the sweep's base
//! recipe (same tokenizer, data, optimizer), kept in its own folder; a run already done is read
//! back, one cut short resumes from its checkpoint, so the sweep as a whole resumes.
//!
//! After training, each model is scored on a downstream multiple-choice task: the normalized
//! negative log-likelihood of the right answer (nats per character, as the paper's step one)
//! and accuracy.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use herd_train::{pretrain, Recipe, RunOptions};

use crate::builtin::task_config;
use crate::config::OutputType;
use crate::evaluate::{evaluate, EvalOptions};
use crate::metrics::Metric;
use crate::model::EvalModel;
use crate::task::Task;

/// A sweep recipe (`recipes/scaling-*.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepRecipe {
    /// Name of the sweep.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// The pretraining recipe every run derives from (relative to this file): tokenizer, data,
    /// optimizer, vocabulary and seed; its shape, steps, annealing and schedules are replaced.
    pub base: PathBuf,
    /// Compute budgets in training FLOPs.
    pub budgets: Vec<f64>,
    /// Tokens per row.
    pub seq_len: usize,
    /// Rows per optimizer step.
    pub batch_rows: usize,
    /// Rows per forward/backward pass (default: `batch_rows`).
    #[serde(default)]
    pub micro_batch_rows: Option<usize>,
    /// Share of a run's steps spent warming up the learning rate.
    #[serde(default = "default_warmup")]
    pub warmup_fraction: f64,
    /// Runs shorter than this many steps are left out (too few to mean anything).
    #[serde(default = "default_min_steps")]
    pub min_steps: u64,
    /// The largest budgets kept out of the downstream fits, to check their prediction.
    #[serde(default = "one")]
    pub held_out_budgets: usize,
    /// Model shapes (`[[sizes]]`).
    pub sizes: Vec<SizeSpec>,
    /// The downstream task of the two-step prediction.
    #[serde(default)]
    pub downstream: Option<DownstreamSpec>,
    /// The base recipe's settings, read once at load; every run's recipe starts from them.
    #[serde(skip)]
    base_table: toml::Table,
}

fn default_warmup() -> f64 {
    0.05
}
fn default_min_steps() -> u64 {
    10
}
fn one() -> usize {
    1
}

/// One model shape of the sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeSpec {
    /// Its name in run folders and tables.
    pub name: String,
    /// Width.
    pub dim: usize,
    /// Layers.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// FFN hidden width.
    pub ffn_dim: usize,
}

/// `[downstream]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownstreamSpec {
    /// A multiple-choice task: a built-in name or a task file.
    pub task: String,
    /// Folder of the task's data files (relative to the working directory).
    pub data_dir: PathBuf,
    /// Documents scored per model.
    #[serde(default)]
    pub limit: Option<usize>,
}

impl SweepRecipe {
    /// Reads and checks a sweep recipe; errors name the file and the key.
    pub fn load(path: &Path) -> Result<SweepRecipe> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading sweep recipe {}", path.display()))?;
        let mut recipe: SweepRecipe =
            toml::from_str(&text).with_context(|| format!("sweep recipe {}", path.display()))?;
        recipe.base = path.parent().unwrap_or(Path::new(".")).join(&recipe.base);
        recipe
            .check()
            .with_context(|| format!("sweep recipe {}", path.display()))?;
        let base = std::fs::read_to_string(&recipe.base)
            .with_context(|| format!("reading base recipe {}", recipe.base.display()))?;
        recipe.base_table = toml::from_str(&base)
            .with_context(|| format!("base recipe {}", recipe.base.display()))?;
        Ok(recipe)
    }

    fn check(&self) -> Result<()> {
        if self.budgets.len() < 2 {
            bail!("budgets: a power law needs 2 budgets or more");
        }
        if let Some(b) = self.budgets.iter().find(|b| !(b.is_finite() && **b > 0.0)) {
            bail!("budgets: {b} is not a positive number of FLOPs");
        }
        if self.sizes.len() < 3 {
            bail!("sizes: a parabola per budget needs 3 model sizes or more");
        }
        if self.seq_len == 0 || self.batch_rows == 0 {
            bail!("seq_len and batch_rows must be at least 1");
        }
        if !(0.0..0.5).contains(&self.warmup_fraction) {
            bail!(
                "warmup_fraction {} must be in [0, 0.5)",
                self.warmup_fraction
            );
        }
        if self.held_out_budgets >= self.budgets.len() - 1 {
            bail!(
                "held_out_budgets {}: at least 2 budgets must stay in the fit",
                self.held_out_budgets
            );
        }
        for s in &self.sizes {
            if s.n_heads == 0 || s.dim % s.n_heads != 0 || s.n_kv_heads == 0 {
                bail!("sizes.{}: dim must split evenly into n_heads", s.name);
            }
        }
        Ok(())
    }

    /// The run of `size` at `budget`: its pretraining recipe, or `None` when it would be
    /// shorter than `min_steps`.
    pub fn plan(&self, budget: f64, size: &SizeSpec) -> Result<Option<PlannedRun>> {
        let mut table = self.base_table.clone();
        let head_dim = size.dim / size.n_heads;
        let model = table
            .entry("model")
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .with_context(|| format!("{}: [model] is not a table", self.base.display()))?;
        for (key, value) in [
            ("dim", size.dim),
            ("n_layers", size.n_layers),
            ("n_heads", size.n_heads),
            ("n_kv_heads", size.n_kv_heads),
            ("head_dim", head_dim),
            ("ffn_dim", size.ffn_dim),
            ("max_seq_len", self.seq_len),
        ] {
            model.insert(key.into(), toml::Value::Integer(value as i64));
        }
        table.remove("anneal");
        // The steps follow from the shape's FLOPs per token, read from a recipe of the shape.
        self.set_steps(&mut table, self.min_steps.max(1))?;
        let probe = Recipe::parse(&toml::to_string(&table)?, &self.base)?;
        let params = probe.flops_per_token(self.seq_len) / 6.0;
        let tokens = budget / (6.0 * params);
        let steps = (tokens / (self.batch_rows * self.seq_len) as f64).round() as u64;
        if steps < self.min_steps {
            return Ok(None);
        }
        let run = format!("{budget:.1e}-{}", size.name);
        table.insert(
            "name".into(),
            toml::Value::String(format!("{}-{run}", self.name)),
        );
        self.set_steps(&mut table, steps)?;
        let text = toml::to_string(&table)?;
        let recipe = Recipe::parse(&text, &self.base)?;
        Ok(Some(PlannedRun {
            name: run,
            budget,
            size: size.clone(),
            params,
            tokens: (steps * (self.batch_rows * self.seq_len) as u64) as f64,
            steps,
            recipe,
            recipe_text: text,
        }))
    }

    /// Sets a derived recipe's length: one stage of `steps` at the sweep's shape of batch, the
    /// warmup a share of it, a cosine decay to the end, checkpoints every quarter and validation
    /// at the end only (the sweep reads the final loss).
    fn set_steps(&self, table: &mut toml::Table, steps: u64) -> Result<()> {
        let int = |v: u64| toml::Value::Integer(v as i64);
        let micro = self.micro_batch_rows.unwrap_or(self.batch_rows);
        let training: toml::Table = toml::from_str(&format!(
            "total_steps = {steps}\nmicro_batch_rows = {micro}\n\
             [[stages]]\nuntil_step = {steps}\nseq_len = {}\nbatch_rows = {}\n",
            self.seq_len, self.batch_rows
        ))?;
        table.insert("training".into(), toml::Value::Table(training));
        let base = self.base.display();
        let optimizer = table
            .get_mut("optimizer")
            .and_then(|o| o.as_table_mut())
            .with_context(|| format!("{base}: no [optimizer]"))?;
        optimizer.remove("decay_steps");
        let warmup = ((steps as f64 * self.warmup_fraction).round() as u64).max(1);
        optimizer.insert("warmup_steps".into(), int(warmup));
        let mut checkpoint = toml::Table::new();
        checkpoint.insert("every".into(), int((steps / 4).max(1)));
        checkpoint.insert("keep_last".into(), int(1));
        table.insert("checkpoint".into(), toml::Value::Table(checkpoint));
        let eval = table
            .get_mut("eval")
            .and_then(|o| o.as_table_mut())
            .with_context(|| format!("{base}: no [eval]"))?;
        eval.insert("every".into(), int(steps));
        Ok(())
    }
}

/// One run of the sweep, planned.
pub struct PlannedRun {
    /// Folder name (`<budget>-<size>`).
    pub name: String,
    /// Its compute budget.
    pub budget: f64,
    /// Its shape.
    pub size: SizeSpec,
    /// N: training FLOPs per token / 6.
    pub params: f64,
    /// Tokens trained on.
    pub tokens: f64,
    /// Optimizer steps.
    pub steps: u64,
    /// Its pretraining recipe.
    pub recipe: Recipe,
    /// The recipe as TOML (written beside the run).
    pub recipe_text: String,
}

/// What one run gave.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Folder name.
    pub name: String,
    /// Compute budget (FLOPs).
    pub budget: f64,
    /// Shape name.
    pub size: String,
    /// N.
    pub params: f64,
    /// Tokens.
    pub tokens: f64,
    /// Steps.
    pub steps: u64,
    /// Final validation loss (nats per token).
    pub val_loss: f64,
    /// Downstream normalized NLL of the right answer (nats per character).
    #[serde(default)]
    pub downstream_nll: Option<f64>,
    /// Downstream accuracy.
    #[serde(default)]
    pub downstream_acc: Option<f64>,
    /// Chance accuracy of the downstream task (mean of 1 / choices).
    #[serde(default)]
    pub downstream_chance: Option<f64>,
}

/// The sweep's downstream task, loaded and checked (it must be multiple choice).
pub struct Downstream {
    /// The task, zero-shot.
    task: Task,
    /// Documents scored per model.
    limit: Option<usize>,
}

impl Downstream {
    /// Loads the task of `spec` with its data.
    pub fn load(spec: &DownstreamSpec) -> Result<Downstream> {
        let task = Task::load(task_config(&spec.task)?, &spec.data_dir, Some(0))?;
        if task.output_type() != OutputType::MultipleChoice {
            bail!("downstream task {}: must be multiple_choice", spec.task);
        }
        Ok(Downstream {
            task,
            limit: spec.limit,
        })
    }

    /// A model's normalized NLL of the right answer (nats per character of the answer),
    /// accuracy and chance accuracy on the task.
    pub fn score(&mut self, model: &Path) -> Result<(f64, f64, f64)> {
        let loaded = herd_infer::load(
            model,
            None,
            DType::F32,
            herd_infer::Quantized::Keep,
            &Device::Cpu,
        )?;
        let lm = EvalModel::new(std::sync::Arc::new(loaded.model), &loaded.tokenizer);
        let options = EvalOptions {
            limit: self.limit,
            bootstrap_iters: 0,
            seed: 0,
            sandbox: None,
            code_workers: 1,
        };
        let task = &mut self.task;
        let result = evaluate(task, &lm, &options, &mut |_, _| {})?;
        let (mut nll, mut chance) = (0.0, 0.0);
        for sample in &result.samples {
            let choices = task.choices(&sample.doc, false)?;
            let gold = task.gold_indices(&sample.doc, &choices)?;
            let Some(Some(g)) = gold.first().copied() else {
                bail!(
                    "downstream task {}: document {} has no right answer among its choices",
                    task.name(),
                    sample.doc_id
                );
            };
            let ll = sample.responses[g][0].as_f64().unwrap_or(f64::NAN);
            nll += -ll / choices[g].chars().count().max(1) as f64;
            chance += 1.0 / choices.len() as f64;
        }
        let count = result.samples.len().max(1) as f64;
        let acc = result
            .metrics
            .iter()
            .find(|m| m.metric == Metric::Acc)
            .map(|m| m.value)
            .context("the downstream task reports no acc")?;
        Ok((nll / count, acc, chance / count))
    }
}

/// Runs (or reads back) one planned run in `dir`: pretraining, then the downstream task.
pub fn run_one(
    run: &PlannedRun,
    dir: &Path,
    downstream: Option<&mut Downstream>,
    progress: bool,
) -> Result<RunResult> {
    let done = dir.join("scaling.json");
    if done.exists() {
        let text = std::fs::read_to_string(&done)?;
        return serde_json::from_str(&text).with_context(|| format!("reading {}", done.display()));
    }
    let summary = pretrain(
        &run.recipe,
        &RunOptions {
            out: dir.to_path_buf(),
            max_steps: None,
            resume: dir.exists(),
            overwrite: false,
            progress,
        },
    )
    .with_context(|| format!("run {}", run.name))?;
    herd_util::fs::write_atomic(&dir.join("recipe.toml"), run.recipe_text.as_bytes())?;
    let val_loss = summary
        .val_loss
        .with_context(|| format!("run {} reported no validation loss", run.name))?;
    let mut result = RunResult {
        name: run.name.clone(),
        budget: run.budget,
        size: run.size.name.clone(),
        params: run.params,
        tokens: run.tokens,
        steps: run.steps,
        val_loss,
        downstream_nll: None,
        downstream_acc: None,
        downstream_chance: None,
    };
    if let Some(downstream) = downstream {
        let model = summary
            .final_model
            .with_context(|| format!("run {} wrote no final model", run.name))?;
        let (nll, acc, chance) = downstream.score(&model)?;
        result.downstream_nll = Some(nll);
        result.downstream_acc = Some(acc);
        result.downstream_chance = Some(chance);
    }
    herd_util::fs::write_atomic(&done, serde_json::to_string_pretty(&result)?.as_bytes())?;
    // The run is read back from scaling.json and final/ from now on; its checkpoints would
    // only fill the disk (a sweep has dozens of runs).
    let checkpoints = dir.join("checkpoints");
    if checkpoints.exists() {
        std::fs::remove_dir_all(&checkpoints)
            .with_context(|| format!("removing {}", checkpoints.display()))?;
    }
    Ok(result)
}

/// Plans and runs the whole sweep into `out/runs/`, budgets from small to large; `on_run` hears
/// of each run before it starts (index, total, plan).
pub fn run_sweep(
    sweep: &SweepRecipe,
    out: &Path,
    progress: bool,
    on_run: &mut dyn FnMut(usize, usize, &PlannedRun),
) -> Result<(Vec<RunResult>, Vec<String>)> {
    // The task is read (and checked) before any run trains.
    let mut downstream = sweep
        .downstream
        .as_ref()
        .map(Downstream::load)
        .transpose()?;
    let mut plans = Vec::new();
    let mut skipped = Vec::new();
    let mut budgets = sweep.budgets.clone();
    budgets.sort_by(f64::total_cmp);
    for &budget in &budgets {
        for size in &sweep.sizes {
            match sweep.plan(budget, size)? {
                Some(p) => plans.push(p),
                None => skipped.push(format!(
                    "{} at {budget:.1e} FLOPs: fewer than {} steps",
                    size.name, sweep.min_steps
                )),
            }
        }
    }
    let mut results = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        on_run(i, plans.len(), plan);
        let dir = out.join("runs").join(&plan.name);
        results.push(run_one(plan, &dir, downstream.as_mut(), progress)?);
    }
    Ok((results, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes/scaling-books.toml")
    }

    #[test]
    fn the_shipped_sweep_plans_equal_compute_runs() {
        let sweep = SweepRecipe::load(&shipped()).unwrap();
        let mut runs = 0;
        for &budget in &sweep.budgets {
            for size in &sweep.sizes {
                let plan = sweep.plan(budget, size).unwrap().expect("over min_steps");
                let spent = 6.0 * plan.params * plan.tokens;
                let step = 6.0 * plan.params * (sweep.batch_rows * sweep.seq_len) as f64;
                assert!((spent - budget).abs() <= step / 2.0, "{}", plan.name);
                assert_eq!(plan.recipe.model.dim, size.dim);
                assert_eq!(plan.recipe.lr.total_steps, plan.steps);
                assert!(plan.recipe.anneal.is_none());
                runs += 1;
            }
        }
        assert_eq!(runs, 24);
    }

    #[test]
    fn bad_sweeps_are_refused_by_key() {
        let text = std::fs::read_to_string(shipped()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let check = |from: &str, to: &str, expected: &str| {
            assert!(text.contains(from), "{from}");
            let path = dir.path().join("sweep.toml");
            std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
            let err = format!("{:#}", SweepRecipe::load(&path).unwrap_err());
            assert!(err.contains(expected), "{err}");
            assert!(err.contains("sweep.toml"), "{err}");
        };
        check(
            "budgets = [3e12, 4.2e12, 6e12, 8.5e12]",
            "budgets = [3e12]",
            "budgets",
        );
        check("budgets = [3e12,", "budgets = [-3e12,", "-3000000000000");
        check(
            "held_out_budgets = 1",
            "held_out_budgets = 4",
            "held_out_budgets 4",
        );
        check("seq_len = 256", "seq_len = 0", "seq_len");
        check(
            "name = \"d96-l3\"\ndim = 96",
            "name = \"d96-l3\"\ndim = 97",
            "sizes.d96-l3",
        );
        check("min_steps = 20", "min_step = 20", "min_step");
    }
}

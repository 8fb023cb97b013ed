//! Pretraining recipes (`recipes/*.toml`): the model shape, the data sources and their mix, the
//! optimizer, the schedule of learning rate, batch size and sequence length, annealing and
//! checkpointing — the whole run as data. Paths are relative to the working directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use herd_model::LlamaConfig;
use serde::Deserialize;

use crate::adamw::AdamWConfig;
use crate::error::{Error, Result};
use crate::loader::SourceSpec;
use crate::schedule::{LrSchedule, Stage};

/// A whole pretraining run.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// Where it was read from.
    pub path: PathBuf,
    /// Short name (`tiny`, `small`, `1b`).
    pub name: String,
    /// Seed of initialisation and data order.
    pub seed: u64,
    /// The tiktoken vocabulary (`tokenizer.model`) the shards were made with.
    pub tokenizer: PathBuf,
    /// Model shape.
    pub model: LlamaConfig,
    /// Data.
    pub data: DataSection,
    /// Optimizer.
    pub optimizer: AdamWConfig,
    /// Gradient clipping norm.
    pub grad_clip: f64,
    /// Learning rate schedule.
    pub lr: LrSchedule,
    /// Steps, stages, micro-batches.
    pub training: TrainingSection,
    /// Annealing, if the run ends with it.
    pub anneal: Option<AnnealSection>,
    /// Checkpointing.
    pub checkpoint: CheckpointSection,
    /// Validation.
    pub eval: EvalSection,
    /// How many processes share the run, and how.
    pub parallel: ParallelSection,
    /// A hash of every setting but `[parallel]` (the file's TOML, not its formatting or
    /// comments): a checkpoint records it and resumes only under the same recipe — on any
    /// number of processes, since they compute the same steps.
    pub fingerprint: String,
}

/// `[parallel]`: the degrees of the paper's four parallelisms (§3.3), ranks ordered
/// [TP, CP, PP, DP]; their product is the number of processes (`mpirun -n`). Each is 1 when
/// the section or the key is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParallelSection {
    /// Tensor parallelism: each layer's weights split over this many ranks.
    #[serde(default = "one")]
    pub tp: usize,
    /// Context parallelism: each sequence split over this many ranks.
    #[serde(default = "one")]
    pub cp: usize,
    /// Pipeline parallelism: the layers split into this many stages.
    #[serde(default = "one")]
    pub pp: usize,
    /// Data parallelism: each batch's rows split over this many replicas, the optimizer state
    /// sharded over them.
    #[serde(default = "one")]
    pub dp: usize,
    /// Interleaved pipeline (Megatron-LM's virtual stages): the blocks are cut into
    /// `pp × virtual_stages` stages, and pipeline rank r holds stages r, r + pp, r + 2·pp, …,
    /// which shrinks the schedule's idle time by this factor for as many more messages.
    #[serde(default = "one")]
    pub virtual_stages: usize,
}

impl Default for ParallelSection {
    fn default() -> ParallelSection {
        ParallelSection {
            tp: 1,
            cp: 1,
            pp: 1,
            dp: 1,
            virtual_stages: 1,
        }
    }
}

impl ParallelSection {
    /// The number of processes: the product of the degrees.
    pub fn world_size(&self) -> usize {
        self.tp * self.cp * self.pp * self.dp
    }
}

fn one() -> usize {
    1
}

/// `[data]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Share of each source's documents held out for validation.
    pub validation_fraction: f64,
    /// `[[data.sources]]`.
    pub sources: Vec<SourceSpec>,
}

/// `[training]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSection {
    /// Optimizer steps of the run.
    pub total_steps: u64,
    /// Rows per forward/backward pass (gradient accumulation over a step's rows).
    pub micro_batch_rows: usize,
    /// Batch-size and sequence-length stages, `[[training.stages]]`.
    pub stages: Vec<Stage>,
    /// Stop with an error after this many non-finite steps in a row.
    #[serde(default = "default_max_bad")]
    pub max_bad_steps_in_a_row: u32,
    /// Peak FLOP/s of the machine in GFLOP/s, for the MFU estimate.
    #[serde(default = "default_peak")]
    pub peak_gflops: f64,
}

fn default_max_bad() -> u32 {
    5
}

fn default_peak() -> f64 {
    // f32 GEMM on 2 cores of the CI machine, measured with PyTorch (design/peers.md).
    178.0
}

/// `[anneal]`: the last `steps` steps take the rate linearly to 0 on their own data mix, and the
/// final model averages the last `average_last` checkpoints taken every `checkpoint_every`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnealSection {
    /// Steps of annealing at the end of the run.
    pub steps: u64,
    /// Mixture weights by source name during annealing (missing sources get 0).
    pub mix: BTreeMap<String, f64>,
    /// Steps between annealing checkpoints.
    pub checkpoint_every: u64,
    /// How many of the last annealing checkpoints the final model averages.
    pub average_last: usize,
}

/// `[checkpoint]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSection {
    /// Steps between checkpoints (one is always written at the last step run).
    pub every: u64,
    /// Checkpoints kept.
    pub keep_last: usize,
}

/// `[eval]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    /// Steps between validation passes (one is always run at the last step).
    pub every: u64,
    /// Validation rows (at the current sequence length).
    pub rows: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OptimizerSection {
    peak_lr: f64,
    min_lr: f64,
    warmup_steps: u64,
    #[serde(default)]
    decay_steps: Option<u64>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    grad_clip: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    name: String,
    #[serde(default)]
    description: Option<String>,
    seed: u64,
    tokenizer: PathBuf,
    model: toml::Table,
    data: DataSection,
    optimizer: OptimizerSection,
    training: TrainingSection,
    #[serde(default)]
    anneal: Option<AnnealSection>,
    checkpoint: CheckpointSection,
    eval: EvalSection,
    #[serde(default)]
    parallel: ParallelSection,
}

impl Recipe {
    /// Reads and checks a recipe file.
    pub fn load(path: &Path) -> Result<Recipe> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses recipe text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Recipe> {
        let bad = |message: String| Error::Recipe {
            path: path.display().to_string(),
            message,
        };
        let file: RecipeFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut settings: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        settings.remove("parallel");
        let fingerprint = herd_util::fingerprint::of_json(
            &serde_json::to_value(&settings).expect("TOML is JSON"),
        );
        let _ = file.description;
        let model = model_config(file.model).map_err(&bad)?;
        model.validate().map_err(|m| bad(format!("[model]: {m}")))?;
        let o = file.optimizer;
        let anneal_steps = file.anneal.as_ref().map_or(0, |a| a.steps);
        let total = file.training.total_steps;
        let recipe = Recipe {
            path: path.to_path_buf(),
            name: file.name,
            seed: file.seed,
            tokenizer: file.tokenizer,
            data: file.data,
            optimizer: AdamWConfig {
                beta1: o.beta1,
                beta2: o.beta2,
                eps: o.eps,
                weight_decay: o.weight_decay,
            },
            grad_clip: o.grad_clip,
            lr: LrSchedule {
                peak_lr: o.peak_lr,
                min_lr: o.min_lr,
                warmup_steps: o.warmup_steps,
                decay_steps: o.decay_steps.unwrap_or(total - anneal_steps.min(total)),
                total_steps: total,
                anneal_steps,
            },
            model,
            training: file.training,
            anneal: file.anneal,
            checkpoint: file.checkpoint,
            eval: file.eval,
            parallel: file.parallel,
            fingerprint,
        };
        recipe.check().map_err(bad)?;
        Ok(recipe)
    }

    fn check(&self) -> std::result::Result<(), String> {
        self.check_numbers()?;
        let t = &self.training;
        if t.stages.is_empty() {
            return Err("[training] needs at least one [[training.stages]]".into());
        }
        for s in &t.stages {
            if s.seq_len > self.model.max_seq_len {
                return Err(format!(
                    "a stage has seq_len {} beyond the model's max_seq_len {}",
                    s.seq_len, self.model.max_seq_len
                ));
            }
            if s.seq_len == 0 || s.batch_rows == 0 {
                return Err("stages need seq_len and batch_rows above 0".into());
            }
        }
        if t.micro_batch_rows == 0 || self.checkpoint.every == 0 || self.eval.every == 0 {
            return Err("micro_batch_rows, checkpoint.every and eval.every must be above 0".into());
        }
        if self.data.sources.iter().all(|s| s.weight <= 0.0) {
            return Err("[[data.sources]] need a positive weight".into());
        }
        if let Some(a) = &self.anneal {
            if a.steps > t.total_steps || a.checkpoint_every == 0 || a.average_last == 0 {
                return Err(
                    "[anneal] needs steps ≤ total_steps, checkpoint_every and average_last above 0"
                        .into(),
                );
            }
            for name in a.mix.keys() {
                if !self.data.sources.iter().any(|s| &s.name == name) {
                    return Err(format!(
                        "[anneal.mix] names {name:?}, which is not a data source"
                    ));
                }
            }
            if a.mix.values().all(|w| *w <= 0.0) {
                return Err("[anneal.mix] needs a positive weight".into());
            }
        }
        Ok(())
    }

    /// Every number a recipe sets, each against what makes sense for it (a NaN learning rate
    /// would train to a NaN model; a zero `keep_last` would keep nothing), named by section
    /// and key.
    fn check_numbers(&self) -> std::result::Result<(), String> {
        use herd_util::check::{at_least, finite_above, finite_at_least, finite_within, within};
        let section = |name: &'static str| move |m: String| format!("[{name}] {m}");
        let o = &self.optimizer;
        let lr = &self.lr;
        finite_above("peak_lr", lr.peak_lr, 0.0).map_err(section("optimizer"))?;
        finite_within("min_lr", lr.min_lr, 0.0, lr.peak_lr).map_err(section("optimizer"))?;
        within("warmup_steps", lr.warmup_steps, 0, lr.total_steps).map_err(section("optimizer"))?;
        finite_within("beta1", o.beta1, 0.0, 0.999_999).map_err(section("optimizer"))?;
        finite_within("beta2", o.beta2, 0.0, 0.999_999_999).map_err(section("optimizer"))?;
        finite_above("eps", o.eps, 0.0).map_err(section("optimizer"))?;
        finite_at_least("weight_decay", o.weight_decay, 0.0).map_err(section("optimizer"))?;
        finite_above("grad_clip", self.grad_clip, 0.0).map_err(section("optimizer"))?;
        let t = &self.training;
        within("total_steps", t.total_steps, 1, 1 << 40).map_err(section("training"))?;
        within("micro_batch_rows", t.micro_batch_rows, 1, 1 << 20).map_err(section("training"))?;
        finite_above("peak_gflops", t.peak_gflops, 0.0).map_err(section("training"))?;
        for s in &t.stages {
            within("batch_rows", s.batch_rows, 1, 1 << 20).map_err(section("training.stages"))?;
        }
        finite_within(
            "validation_fraction",
            self.data.validation_fraction,
            0.0,
            0.5,
        )
        .map_err(section("data"))?;
        for s in &self.data.sources {
            finite_at_least(&format!("weight of {:?}", s.name), s.weight, 0.0)
                .map_err(section("data.sources"))?;
        }
        let mut names: Vec<&str> = self.data.sources.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("[[data.sources]] name {:?} is used twice", w[0]));
        }
        if let Some(a) = &self.anneal {
            for (name, w) in &a.mix {
                finite_at_least(&format!("mix {name:?}"), *w, 0.0).map_err(section("anneal"))?;
            }
        }
        at_least("keep_last", self.checkpoint.keep_last, 1).map_err(section("checkpoint"))?;
        at_least("rows", self.eval.rows, 1).map_err(section("eval"))?;
        let p = &self.parallel;
        for (key, degree) in [("tp", p.tp), ("cp", p.cp), ("pp", p.pp), ("dp", p.dp)] {
            within(key, degree, 1, 1 << 16).map_err(section("parallel"))?;
        }
        within("virtual_stages", p.virtual_stages, 1, 64).map_err(section("parallel"))?;
        if p.virtual_stages > 1 && p.pp == 1 {
            return Err(
                "[parallel] virtual_stages interleaves the stages of a pipeline: set pp above 1"
                    .into(),
            );
        }
        if let Some(s) = t.stages.iter().find(|s| !s.batch_rows.is_multiple_of(p.dp)) {
            return Err(format!(
                "[parallel] dp = {} does not divide a stage's batch_rows {}: each data-parallel \
                 rank computes an equal share of every batch",
                p.dp, s.batch_rows
            ));
        }
        Ok(())
    }

    /// Mixture weights (one per source) for `step`.
    pub fn mix_at(&self, step: u64) -> Vec<f64> {
        match &self.anneal {
            Some(a) if self.lr.is_annealing(step) => self
                .data
                .sources
                .iter()
                .map(|s| a.mix.get(&s.name).copied().unwrap_or(0.0))
                .collect(),
            _ => self.data.sources.iter().map(|s| s.weight).collect(),
        }
    }

    /// Bytes the run needs at its largest stage: (f32 weights, gradients and AdamW's two
    /// moments — 16 bytes per parameter; the activations autograd keeps for one micro-batch
    /// without recomputation — per layer about 16 vectors of `dim`, 5 of `ffn_dim` and the
    /// attention scores and probabilities per token, plus three vocabulary-wide rows per token
    /// at the output).
    pub fn memory_estimate(&self) -> (u64, u64) {
        let c = &self.model;
        let state = 16 * c.num_parameters() as u64;
        let activations = self
            .training
            .stages
            .iter()
            .map(|s| {
                let tokens = (self.training.micro_batch_rows.min(s.batch_rows) * s.seq_len) as u64;
                let per_layer = 16 * c.dim + 5 * c.ffn_dim + 2 * c.n_heads * s.seq_len;
                let per_token = c.n_layers * per_layer + 3 * c.vocab_size;
                4 * tokens * per_token as u64
            })
            .max()
            .unwrap_or(0);
        (state, activations)
    }

    /// Training FLOPs per token: 6 per matmul parameter (the output layer included, the input
    /// embedding lookup not) plus attention's 12 · layers · seq_len · dim.
    pub fn flops_per_token(&self, seq_len: usize) -> f64 {
        flops_per_token(&self.model, seq_len)
    }
}

/// Training FLOPs per token of `c` at `seq_len` (see [`Recipe::flops_per_token`]).
pub fn flops_per_token(c: &LlamaConfig, seq_len: usize) -> f64 {
    let matmul = c.num_parameters()
        - c.vocab_size * c.dim * usize::from(!c.tie_embeddings)
        - (2 * c.n_layers + 1) * c.dim;
    6.0 * matmul as f64 + 12.0 * (c.n_layers * seq_len * c.dim) as f64
}

/// `[model]`: a `preset` and/or explicit fields (which override the preset's).
fn model_config(mut table: toml::Table) -> std::result::Result<LlamaConfig, String> {
    let mut base = match table.remove("preset") {
        Some(toml::Value::String(name)) => {
            let preset =
                LlamaConfig::preset(&name).ok_or(format!("[model]: unknown preset {name:?}"))?;
            toml::Table::try_from(preset).map_err(|e| e.to_string())?
        }
        Some(_) => return Err("[model] preset must be a string".into()),
        None => toml::Table::new(),
    };
    base.extend(table);
    toml::Value::Table(base)
        .try_into()
        .map_err(|e| format!("[model]: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_recipes_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes");
        for name in ["tiny", "small", "1b"] {
            let path = dir.join(format!("{name}.toml"));
            let recipe = Recipe::load(&path).unwrap();
            assert_eq!(recipe.name, name);
        }
        let small = Recipe::load(&dir.join("small.toml")).unwrap();
        let c = &small.model;
        let millions = (c.num_parameters() - 2 * c.vocab_size * c.dim) as f64 / 1e6;
        assert!(
            (20.0..30.0).contains(&millions),
            "small has {millions}M parameters"
        );
        let one_b = Recipe::load(&dir.join("1b.toml")).unwrap();
        assert_eq!(one_b.model, LlamaConfig::preset("llama3.2-1b").unwrap());
        // AdamW state alone puts 1b beyond a 24 GB machine; tiny fits in well under 1 GB.
        let (state, _) = one_b.memory_estimate();
        assert!((19e9..21e9).contains(&(state as f64)), "{state}");
        let tiny = Recipe::load(&dir.join("tiny.toml")).unwrap();
        let (state, activations) = tiny.memory_estimate();
        assert!(state + activations < 1_000_000_000);
        // The paper's runs as data: its batches of 4M, 8M and 16M tokens, its layouts.
        for (name, preset, world) in [
            ("8b", "llama3.1-8b", 1024),
            ("405b", "llama3.1-405b", 16384),
        ] {
            let recipe = Recipe::load(&dir.join(format!("{name}.toml"))).unwrap();
            assert_eq!(recipe.model, LlamaConfig::preset(preset).unwrap(), "{name}");
            assert_eq!(recipe.parallel.world_size(), world, "{name}");
            let tokens: Vec<usize> = recipe
                .training
                .stages
                .iter()
                .map(|s| s.seq_len * s.batch_rows)
                .collect();
            assert_eq!(tokens, [1 << 22, 1 << 23, 1 << 24], "{name}");
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes/tiny.toml"),
        )
        .unwrap();
        let broken = text.replace("seq_len = 256\nbatch_rows", "seq_len = 100000\nbatch_rows");
        let err = Recipe::parse(&broken, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.toml") && err.contains("max_seq_len"),
            "{err}"
        );
        for (from, to, key) in [
            ("peak_lr = 2e-3", "peak_lr = nan", "peak_lr"),
            ("peak_lr = 2e-3", "peak_lr = -2e-3", "peak_lr"),
            ("min_lr = 2e-4", "min_lr = 1.0", "min_lr"),
            ("beta2 = 0.95", "beta2 = 1.5", "beta2"),
            ("eps = 1e-8", "eps = 0.0", "eps"),
            ("grad_clip = 1.0", "grad_clip = inf", "grad_clip"),
            ("keep_last = 2", "keep_last = 0", "keep_last"),
            ("weight = 1.0", "weight = -1.0", "weight"),
            (
                "validation_fraction = 0.05",
                "validation_fraction = nan",
                "validation_fraction",
            ),
        ] {
            assert!(text.contains(from), "{from}");
            let err = Recipe::parse(&text.replace(from, to), Path::new("x.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("x.toml") && err.contains(&format!("`{key}")),
                "{to}: {err}"
            );
        }
        let typo = text.replace("keep_last", "keep_lats");
        let err = Recipe::parse(&typo, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("keep_lats"), "{err}");
    }

    #[test]
    fn parallel_section_is_checked_and_left_out_of_the_fingerprint() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes/tiny.toml"),
        )
        .unwrap();
        let alone = Recipe::parse(&text, Path::new("x.toml")).unwrap();
        assert_eq!(alone.parallel, ParallelSection::default());
        assert_eq!(alone.parallel.world_size(), 1);
        let shared = Recipe::parse(
            &format!("{text}\n[parallel]\ndp = 2\n"),
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(shared.parallel.dp, 2);
        assert_eq!(shared.parallel.world_size(), 2);
        // The same steps on two processes: a checkpoint of either resumes under the other.
        assert_eq!(shared.fingerprint, alone.fingerprint);
        for (section, message) in [
            ("dp = 0", "`dp`"),
            ("tp = 0", "`tp`"),
            ("dp = 3", "does not divide a stage's batch_rows"),
            ("ranks = 2", "ranks"),
        ] {
            let err = Recipe::parse(
                &format!("{text}\n[parallel]\n{section}\n"),
                Path::new("x.toml"),
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("x.toml") && err.contains(message),
                "{section}: {err}"
            );
        }
    }
}

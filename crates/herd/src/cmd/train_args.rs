//! Flags shared by the post-training commands (`herd sft`, `herd rm train`, `herd dpo`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use herd_align::fit::TrainConfig;
use herd_align::rounds::overlay;
use herd_align::stages::HeldOut;
use herd_train::RunOptions;

/// Model, data, output and the training knobs (each overrides the stage's default and the
/// `--config` file).
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Model to start from: an HF folder with its tokenizer.model (as `herd pretrain` writes).
    #[arg(long, short)]
    pub model: PathBuf,
    /// Data files or folders (.json arrays or .jsonl, gzipped or not): OpenAI messages,
    /// ShareGPT, Alpaca, LLaMA-Factory preferences, prompt/chosen/rejected, HH-RLHF.
    #[arg(long, short, required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// Output folder: checkpoints/, final/ (an HF model folder), metrics.jsonl.
    #[arg(long, short)]
    pub out: PathBuf,
    /// A TOML file of training settings (the keys of a recipe's [sft]/[reward]/[dpo] section).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Optimizer steps.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Examples (conversations or pairs) per step.
    #[arg(long, value_parser = super::values::count)]
    pub batch: Option<usize>,
    /// Examples per forward/backward pass (gradient accumulation).
    #[arg(long, value_parser = super::values::count)]
    pub micro_batch: Option<usize>,
    /// Tokens per packed row; longer examples are cut.
    #[arg(long, value_parser = super::values::count)]
    pub seq_len: Option<usize>,
    /// Peak learning rate.
    #[arg(long, value_parser = super::values::positive)]
    pub lr: Option<f64>,
    /// Seed of the data order.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Share of prompts held out for evaluation (chosen by a hash of the prompt).
    #[arg(long, default_value_t = 0.05, value_parser = super::values::fraction)]
    pub held_out: f64,
    /// Held-out files to evaluate on instead (then all of --data is trained on).
    #[arg(long, num_args = 1..)]
    pub eval_data: Vec<PathBuf>,
    /// Stop after this step (a checkpoint is written); --resume continues later.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Continue the run in --out from its newest checkpoint, exactly as if never stopped (the
    /// model, data and settings must be the ones it was started with).
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Delete an earlier run in --out and start again.
    #[arg(long)]
    pub overwrite: bool,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

impl TrainArgs {
    /// `defaults`, then the --config file, then the flags.
    pub fn config(&self, defaults: TrainConfig) -> Result<TrainConfig> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let table: toml::Table =
                    toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
                overlay(&defaults, table, &path.display().to_string())
                    .map_err(anyhow::Error::msg)?
            }
            None => defaults,
        };
        config.steps = self.steps.unwrap_or(config.steps);
        config.batch = self.batch.unwrap_or(config.batch);
        config.micro_batch = self.micro_batch.unwrap_or(config.micro_batch);
        config.seq_len = self.seq_len.unwrap_or(config.seq_len);
        config.lr = self.lr.unwrap_or(config.lr);
        config.seed = self.seed.unwrap_or(config.seed);
        Ok(config)
    }

    /// Where the held-out examples come from.
    pub fn held_out(&self) -> HeldOut {
        if self.eval_data.is_empty() {
            HeldOut::Fraction(self.held_out)
        } else {
            HeldOut::Files(self.eval_data.clone())
        }
    }

    /// How to run.
    pub fn options(&self) -> RunOptions {
        RunOptions {
            out: self.out.clone(),
            max_steps: self.max_steps,
            resume: self.resume,
            overwrite: self.overwrite,
            progress: !self.quiet,
        }
    }
}

/// Prints where a finished stage left its model.
pub fn print_summary(report: &herd_align::stages::StageReport) {
    let run = &report.run;
    eprintln!(
        "{} steps · last loss {} · held-out loss {} · {} skipped",
        run.steps,
        run.last_loss.map_or("-".into(), |l| format!("{l:.4}")),
        run.val_loss.map_or("-".into(), |l| format!("{l:.4}")),
        run.skipped_steps
    );
    if let Some(model) = &run.final_model {
        println!("{}", model.display());
    }
}

//! `herd pretrain`: run a pretraining recipe (`recipes/*.toml`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use herd_train::{pretrain, Recipe, RunOptions};

/// Flags of `herd pretrain`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The recipe: model shape, data mix, optimizer, schedules (see recipes/tiny.toml).
    #[arg(long, short)]
    recipe: PathBuf,
    /// Output folder: checkpoints/, anneal/, final/ (an HF model folder), metrics.jsonl
    /// [default: runs/<recipe name>].
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Stop after this step (writing a checkpoint there); --resume continues later.
    #[arg(long)]
    max_steps: Option<u64>,
    /// Continue the run in --out from its newest checkpoint, exactly as if never stopped (the
    /// recipe, tokenizer and shards must be the ones it was started with).
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Delete an earlier run in --out and start again.
    #[arg(long)]
    overwrite: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Runs `herd pretrain`.
pub fn run(args: Args) -> Result<()> {
    let recipe = Recipe::load(&args.recipe)?;
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("runs").join(&recipe.name));
    let c = &recipe.model;
    eprintln!(
        "recipe {} ({}): {} layers, d {}, {:.1}M parameters, {} steps → {}",
        recipe.name,
        args.recipe.display(),
        c.n_layers,
        c.dim,
        c.num_parameters() as f64 / 1e6,
        recipe.lr.total_steps,
        out.display()
    );
    let (state, activations) = recipe.memory_estimate();
    let needed = state + activations;
    let gb = |b: u64| b as f64 / 1e9;
    eprintln!(
        "memory: ~{:.1} GB (weights, gradients, AdamW {:.1} GB + activations {:.1} GB)",
        gb(needed),
        gb(state),
        gb(activations)
    );
    if let Some(available) = available_memory() {
        if needed > available {
            bail!(
                "recipe {} needs ~{:.1} GB but this machine has {:.1} GB available: \
                 it is meant for a bigger machine (or lower micro_batch_rows)",
                recipe.name,
                gb(needed),
                gb(available)
            );
        }
    }
    let options = RunOptions {
        out: out.clone(),
        max_steps: args.max_steps,
        resume: args.resume,
        overwrite: args.overwrite,
        progress: !args.quiet,
    };
    let summary = pretrain(&recipe, &options)?;
    let loss = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    eprintln!(
        "step {}: loss {}, validation loss {}, {} skipped steps; metrics in {}",
        summary.steps,
        loss(summary.last_loss),
        loss(summary.val_loss),
        summary.skipped_steps,
        out.join("metrics.jsonl").display()
    );
    match summary.final_model {
        Some(dir) => eprintln!(
            "final model: {} (try `herd generate --model {} --prompt …`)",
            dir.display(),
            dir.display()
        ),
        None => eprintln!(
            "stopped before the end; continue with `herd pretrain --recipe {} --out {} --resume`",
            args.recipe.display(),
            out.display()
        ),
    }
    Ok(())
}

/// `MemAvailable` of /proc/meminfo in bytes (Linux), if readable.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

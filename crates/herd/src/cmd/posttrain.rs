//! `herd posttrain`: the rounds of a post-training recipe (`recipes/posttrain-*.toml`).

use std::path::PathBuf;

use anyhow::Result;
use herd_align::rounds::{posttrain, PosttrainRecipe};

/// Flags of `herd posttrain`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The recipe: base model, data, rounds and each stage's settings.
    #[arg(long, short)]
    recipe: PathBuf,
    /// Output folder [default: runs/<recipe name>].
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Keep finished stages of the run in --out and continue the interrupted one (the recipe
    /// must be the one it was started with).
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Delete an earlier run in --out and start again.
    #[arg(long)]
    overwrite: bool,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
}

/// Runs `herd posttrain`.
pub fn run(args: Args) -> Result<()> {
    let recipe = PosttrainRecipe::load(&args.recipe)?;
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("runs").join(&recipe.name));
    let summary = posttrain(&recipe, &out, args.resume, args.overwrite, !args.quiet)?;
    for (round, (responses, rate, best, mean)) in summary.rejection.iter().enumerate() {
        eprintln!(
            "round {}: {responses} responses sampled at {rate:.2}/s; mean reward {mean:.3}, kept {best:.3}",
            round + 1
        );
    }
    println!("{}", summary.final_model.display());
    Ok(())
}

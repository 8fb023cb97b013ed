//! `herd sft`: supervised fine-tuning on conversations (loss on the assistant's tokens).

use anyhow::Result;
use herd_align::rounds::sft_defaults;

use super::train_args::{print_summary, TrainArgs};

/// Flags of `herd sft`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    train: TrainArgs,
}

/// Runs `herd sft`.
pub fn run(args: Args) -> Result<()> {
    let config = args.train.config(sft_defaults())?;
    let report = herd_align::stages::sft(
        &args.train.model,
        &args.train.data,
        &config,
        &args.train.held_out(),
        &args.train.options(),
    )?;
    print_summary(&report);
    Ok(())
}

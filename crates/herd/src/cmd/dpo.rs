//! `herd dpo`: direct preference optimization against the starting model as frozen reference.

use anyhow::Result;
use herd_align::dpo::DpoConfig;
use herd_align::rounds::dpo_defaults;

use super::train_args::{print_summary, TrainArgs};

/// Flags of `herd dpo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    train: TrainArgs,
    /// Inverse temperature of the implicit reward (paper: 0.1).
    #[arg(long, default_value_t = 0.1, value_parser = super::values::positive)]
    beta: f64,
    /// Weight of the NLL term on the chosen responses (paper: 0.2).
    #[arg(long, default_value_t = 0.2, value_parser = super::values::non_negative)]
    nll_coefficient: f64,
}

/// Runs `herd dpo`.
pub fn run(args: Args) -> Result<()> {
    let config = args.train.config(dpo_defaults())?;
    let report = herd_align::stages::dpo(
        &args.train.model,
        &args.train.data,
        &config,
        DpoConfig {
            beta: args.beta,
            nll_coefficient: args.nll_coefficient,
        },
        &args.train.held_out(),
        &args.train.options(),
    )?;
    print_summary(&report);
    Ok(())
}

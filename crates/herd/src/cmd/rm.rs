//! `herd rm`: train a reward model on preference pairs, or score conversations and pairs with
//! one.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use herd_align::dataset::token_pairs;
use herd_align::masks::{sft_example, Masked};
use herd_align::reward::RewardModel;
use herd_align::rounds::reward_defaults;
use herd_align::stages::read_examples;
use herd_tokenizer::chat::ToolPromptFormat;
use herd_tokenizer::Tokenizer;
use serde_json::json;

use super::train_args::{print_summary, TrainArgs};

/// `herd rm` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Train a reward model (the model plus a scalar head on the last token) on pairs with
    /// −log σ(r_chosen − r_rejected); reports held-out pairwise accuracy.
    Train(TrainArgs),
    /// Score every conversation (its reward) and preference pair (both rewards) of the files;
    /// prints one JSON object per line and the pairwise accuracy.
    Score(ScoreArgs),
}

/// Flags of `herd rm score`.
#[derive(clap::Args, Debug)]
pub struct ScoreArgs {
    /// The reward model folder (`final/` of `herd rm train`).
    #[arg(long, short)]
    model: PathBuf,
    /// Files or folders of conversations or preference pairs.
    #[arg(long, short, required = true, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Tokens per packed row; longer sequences are cut.
    #[arg(long, default_value_t = 2048, value_parser = super::values::count)]
    seq_len: usize,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 8, value_parser = super::values::count)]
    per_pass: usize,
}

/// Runs `herd rm`.
pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Train(train) => {
            let config = train.config(reward_defaults())?;
            let report = herd_align::stages::reward_model(
                &train.model,
                &train.data,
                &config,
                &train.held_out(),
                &train.options(),
            )?;
            print_summary(&report);
            Ok(())
        }
        Command::Score(args) => score(args),
    }
}

fn score(args: ScoreArgs) -> Result<()> {
    let model = RewardModel::load(&args.model, &Device::Cpu)?;
    let tokenizer = Tokenizer::from_path(&args.model)?;
    let examples = read_examples(&args.data, true)?;
    let format = ToolPromptFormat::Json;
    let dialogs: Vec<Masked> = examples
        .dialogs
        .iter()
        .map(|d| sft_example(&tokenizer, d, format))
        .collect::<Result<_, _>>()?;
    let refs: Vec<&Masked> = dialogs.iter().collect();
    for (i, r) in model
        .score(&refs, args.seq_len, args.per_pass)?
        .iter()
        .enumerate()
    {
        println!("{}", json!({"conversation": i, "reward": r}));
    }
    let pairs = token_pairs(&tokenizer, &examples.preferences, format)?;
    let sequences: Vec<Masked> = pairs
        .iter()
        .flat_map(|p| [p.sequence(&p.chosen), p.sequence(&p.rejected)])
        .collect();
    let refs: Vec<&Masked> = sequences.iter().collect();
    let rewards = model.score(&refs, args.seq_len, args.per_pass)?;
    let mut correct = 0;
    for (i, r) in rewards.chunks(2).enumerate() {
        correct += usize::from(r[0] > r[1]);
        println!("{}", json!({"pair": i, "chosen": r[0], "rejected": r[1]}));
    }
    if !pairs.is_empty() {
        eprintln!(
            "pairwise accuracy {:.4} ({correct} of {} pairs ranked chosen over rejected)",
            correct as f64 / pairs.len() as f64,
            pairs.len()
        );
    }
    Ok(())
}

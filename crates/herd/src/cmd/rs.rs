//! `herd rs`: rejection sampling — K responses per prompt from a policy, the best by a reward
//! model kept as SFT data (JSONL in OpenAI messages form).

use std::path::PathBuf;

use anyhow::Result;
use herd_align::rejection::RejectionConfig;
use herd_align::stages::{prompts_of, rejection_sampling};

/// Flags of `herd rs`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The policy to sample from (an HF folder with its tokenizer).
    #[arg(long)]
    policy: PathBuf,
    /// The reward model (`final/` of `herd rm train`).
    #[arg(long)]
    reward_model: PathBuf,
    /// Files whose prompts are answered: conversations (all but the last reply) or
    /// preference records (their prompt).
    #[arg(long, required = true, num_args = 1..)]
    prompts: Vec<PathBuf>,
    /// Output JSONL: {"messages", "reward", "rewards"} per prompt.
    #[arg(long, short)]
    out: PathBuf,
    /// Responses per prompt (K).
    #[arg(long, default_value_t = 4, value_parser = super::values::count)]
    samples: usize,
    /// Most tokens per response.
    #[arg(long, default_value_t = 128, value_parser = super::values::count)]
    max_tokens: usize,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.8, value_parser = super::values::non_negative_f32)]
    temperature: f32,
    /// Nucleus threshold (0 < p ≤ 1).
    #[arg(long, default_value_t = 0.95, value_parser = super::values::nonzero_probability_f32)]
    top_p: f32,
    /// Seed of the draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Only the first N prompts.
    #[arg(long)]
    limit: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Runs `herd rs`.
pub fn run(args: Args) -> Result<()> {
    let mut prompts = prompts_of(&args.prompts, !args.quiet)?;
    prompts.truncate(args.limit.unwrap_or(prompts.len()));
    let config = RejectionConfig {
        samples: args.samples,
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        ..RejectionConfig::default()
    };
    let stats = rejection_sampling(
        &args.policy,
        &args.reward_model,
        &prompts,
        &config,
        &args.out,
        !args.quiet,
    )?;
    eprintln!(
        "{} prompts × {} samples: {} responses, {} tokens in {:.1} s ({:.2} responses/s, {:.1} tok/s); \
         mean reward {:.3}, of the kept {:.3} → {}",
        stats.prompts,
        args.samples,
        stats.responses,
        stats.tokens,
        stats.seconds,
        stats.responses as f64 / stats.seconds,
        stats.tokens as f64 / stats.seconds,
        stats.mean_reward,
        stats.mean_best_reward,
        args.out.display()
    );
    Ok(())
}

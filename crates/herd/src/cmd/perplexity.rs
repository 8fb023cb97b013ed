//! `herd perplexity`: the perplexity of a text file, computed as llama.cpp's `llama-perplexity`
//! does (chunks of --context tokens, the second half of each scored), so the two tools give
//! comparable numbers on the same model file and text.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;

use super::ModelArgs;

/// Flags of `herd perplexity`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "The same as `llama-perplexity -m MODEL -f FILE -c CONTEXT`: compare the final estimates."
)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The text (UTF-8, possibly .gz or .zst).
    #[arg(long, short)]
    file: PathBuf,
    /// Tokens per chunk (llama.cpp's -c).
    #[arg(long, short, default_value_t = 512, value_parser = super::values::count)]
    context: usize,
    /// Evaluate at most this many chunks (llama.cpp's --chunks).
    #[arg(long, value_parser = super::values::count)]
    chunks: Option<usize>,
    /// Print JSON (the running perplexity per chunk too).
    #[arg(long)]
    json: bool,
}

/// Runs `herd perplexity`.
pub fn run(args: Args) -> Result<()> {
    let loaded = args.model.load()?;
    let text = super::read_text_file(&args.file)?;
    let started = std::time::Instant::now();
    let result = herd_infer::perplexity::perplexity(
        &loaded.model,
        &loaded.tokenizer,
        &text,
        args.context,
        args.chunks,
        |chunk, chunks, ppl| {
            if !args.json {
                eprint!("[{chunk}/{chunks}]{ppl:.4} ");
            }
        },
    )?;
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        let mut out = serde_json::to_value(&result)?;
        out["model"] = json!(args.model.model.display().to_string());
        out["context"] = json!(args.context);
        out["seconds"] = json!(seconds);
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        eprintln!();
        println!(
            "Final estimate: PPL = {:.4} +/- {:.5} ({} chunks of {}, {} tokens scored, {:.0} tokens/s)",
            result.ppl,
            result.ppl_error,
            result.chunks,
            args.context,
            result.scored,
            (result.chunks * args.context) as f64 / seconds
        );
    }
    Ok(())
}

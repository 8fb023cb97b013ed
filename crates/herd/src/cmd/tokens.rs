//! `herd tokens encode|decode`: text to ids and back, whole stdin or JSONL records.

use std::io::{BufRead, Write};

use std::path::PathBuf;

use anyhow::{bail, Result};
use herd_tokenizer::Tokenizer;
use serde_json::{json, Value};

use super::read_stdin;

/// `herd tokens` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Text (stdin) to a JSON array of ids; with --jsonl, `{"text": …}` lines to `{"ids": […]}`.
    Encode(Args),
    /// Ids (stdin: JSON array, or numbers separated by spaces/commas) to text; with --jsonl,
    /// `{"ids": […]}` lines to `{"text": …}`.
    Decode(Args),
}

/// Flags of `herd tokens`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Tokenizer: tokenizer.model (Llama 3), tokenizer.json, a GGUF file, or a model folder.
    #[arg(long, short)]
    tokenizer: PathBuf,
    /// One JSON record per line (`text` or `ids` field); other fields are kept.
    #[arg(long)]
    jsonl: bool,
    /// Prepend the BOS token when encoding.
    #[arg(long)]
    bos: bool,
    /// Encode special-token text (e.g. `<|eot_id|>`) as special tokens.
    #[arg(long)]
    allow_special: bool,
}

/// Runs `herd tokens encode|decode`.
pub fn run(command: Command) -> Result<()> {
    let (args, encode) = match command {
        Command::Encode(a) => (a, true),
        Command::Decode(a) => (a, false),
    };
    let tokenizer = herd_infer::loader::load_tokenizer(&args.tokenizer)?;
    let convert = |record: &mut Value| -> Result<()> {
        if encode {
            let text = record
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow::anyhow!("no string field `text`"))?;
            let ids = encode_text(&tokenizer, text, &args)?;
            record["ids"] = json!(ids);
        } else {
            let ids: Vec<u32> =
                serde_json::from_value(record.get("ids").cloned().unwrap_or(Value::Null))
                    .map_err(|_| anyhow::anyhow!("no array of ids in field `ids`"))?;
            record["text"] = json!(tokenizer.decode(&ids)?);
        }
        Ok(())
    };
    let mut out = std::io::stdout().lock();
    if !args.jsonl {
        let input = read_stdin()?;
        if encode {
            writeln!(
                out,
                "{}",
                serde_json::to_string(&encode_text(&tokenizer, &input, &args)?)?
            )?;
        } else {
            writeln!(out, "{}", tokenizer.decode(&parse_ids(&input)?)?)?;
        }
        return Ok(());
    }
    let mut bad = 0usize;
    // Lines as bytes: one that is not UTF-8 (or not JSON) is a bad record, not the end.
    for (n, line) in std::io::stdin().lock().split(b'\n').enumerate() {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let result = serde_json::from_slice::<Value>(&line)
            .map_err(anyhow::Error::from)
            .and_then(|mut record| {
                convert(&mut record)?;
                Ok(record)
            });
        match result {
            Ok(record) => writeln!(out, "{record}")?,
            Err(e) => {
                bad += 1;
                eprintln!("stdin line {}: {e} (record skipped)", n + 1);
            }
        }
    }
    if bad > 0 {
        bail!("{bad} bad record(s) skipped (listed above)");
    }
    Ok(())
}

fn encode_text(tokenizer: &Tokenizer, text: &str, args: &Args) -> Result<Vec<u32>> {
    Ok(if args.bos {
        tokenizer.encode_prompt(text, args.allow_special)?
    } else {
        tokenizer.encode(text, args.allow_special)?
    })
}

/// Ids from a JSON array or from numbers separated by whitespace or commas.
fn parse_ids(input: &str) -> Result<Vec<u32>> {
    if let Ok(ids) = serde_json::from_str::<Vec<u32>>(input.trim()) {
        return Ok(ids);
    }
    input
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .map_err(|_| anyhow::anyhow!("`{s}` is not a token id"))
        })
        .collect()
}

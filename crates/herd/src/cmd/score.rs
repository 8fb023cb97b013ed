//! `herd score`: per-token log-probabilities of a text under a model, as JSON.

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::ModelArgs;

/// Flags of `herd score`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Text to score (tokenized with BOS when the model uses one).
    #[arg(long, conflicts_with = "ids")]
    text: Option<String>,
    /// Token ids to score, comma-separated.
    #[arg(long, value_delimiter = ',')]
    ids: Option<Vec<u32>>,
    /// Alternatives per position.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
}

/// Runs `herd score`.
pub fn run(args: Args) -> Result<()> {
    let loaded = args.model.load()?;
    let tokenizer = &loaded.tokenizer;
    let ids = match (args.text, args.ids) {
        (Some(text), _) => tokenizer.encode_prompt(&text, false)?,
        (None, Some(ids)) => ids,
        (None, None) => bail!("give --text or --ids"),
    };
    let vocab = loaded.model.config().vocab_size as u32;
    if let Some(bad) = ids.iter().find(|&&id| id >= vocab) {
        bail!("token id {bad} is outside the model's vocabulary of {vocab}");
    }
    let scores =
        herd_infer::score::score(&loaded.model, &ids, args.top_k).context("scoring failed")?;
    let text_of = |id: u32| tokenizer.decode(&[id]).unwrap_or_default();
    let total: f64 = scores.iter().map(|s| s.logprob as f64).sum();
    let positions: Vec<_> = scores
        .iter()
        .map(|s| {
            let top: Vec<_> = s.top.iter().map(|&(id, lp)| json!({"id": id, "text": text_of(id), "logprob": lp})).collect();
            json!({"position": s.position, "id": s.token, "text": text_of(s.token), "logprob": s.logprob, "is_greedy": s.is_greedy, "top_logprobs": top})
        })
        .collect();
    let out = json!({
        "ids": ids,
        "tokens": positions,
        "sum_logprob": total,
        "perplexity": (-total / scores.len() as f64).exp(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

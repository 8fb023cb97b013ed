//! Scoring a text: the log-probability of every token given the ones before it, with the most
//! likely alternatives (what evaluation harnesses ask of a model).

use anyhow::{bail, Result};
use herd_model::{Llama, PagedKv, PagedSeq};
use serde::Serialize;

use crate::generate::PREFILL_CHUNK;
use crate::sampling::{log_softmax, top_k_logprobs};

/// The score of one token.
#[derive(Debug, Clone, Serialize)]
pub struct TokenScore {
    /// Index in the sequence.
    pub position: usize,
    /// The token id.
    pub token: u32,
    /// `log p(token | tokens before it)`.
    pub logprob: f32,
    /// Whether it is the model's most likely token there.
    pub is_greedy: bool,
    /// The most likely tokens there as `(id, logprob)`, best first.
    pub top: Vec<(u32, f32)>,
}

/// Scores `ids[1..]` given their prefixes (the first token has no prediction).
pub fn score(model: &Llama, ids: &[u32], top_k: usize) -> Result<Vec<TokenScore>> {
    if ids.len() < 2 {
        bail!("scoring needs at least two tokens (the first one is only context)");
    }
    if ids.len() > model.config().max_seq_len {
        bail!(
            "{} tokens exceed the model's context of {}",
            ids.len(),
            model.config().max_seq_len
        );
    }
    // On the paged cache in generation's chunks: the numbers the serving engine gives for an
    // echoed prompt, bit for bit.
    let (mut kv, table) = PagedKv::single(model.config(), ids.len());
    let mut scores = Vec::with_capacity(ids.len() - 1);
    for (c, chunk) in ids.chunks(PREFILL_CHUNK).enumerate() {
        let first = c * PREFILL_CHUNK;
        let seq = PagedSeq {
            blocks: &table,
            cached: first,
        };
        let hidden = model.step_rows(&[chunk], &mut kv, &[seq], &[true])?;
        let logits = model.logits(&hidden)?.to_vec2::<f32>()?;
        // Row `i` is position `first + i`, which predicts the token after it.
        for (p, row) in (first + 1..ids.len()).zip(&logits) {
            scores.push(TokenScore::from_logits(p, ids[p], row, top_k));
        }
    }
    Ok(scores)
}

impl TokenScore {
    /// The score of `token` at `position` from the logits of the position before it, with
    /// `top_k` alternatives.
    pub fn from_logits(position: usize, token: u32, logits: &[f32], top_k: usize) -> TokenScore {
        let logprobs = log_softmax(logits);
        let top = top_k_logprobs(&logprobs, top_k.max(1));
        TokenScore {
            position,
            token,
            logprob: logprobs[token as usize],
            is_greedy: top[0].0 == token,
            top: top.into_iter().take(top_k).collect(),
        }
    }
}

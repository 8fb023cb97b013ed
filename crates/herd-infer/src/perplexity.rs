//! Perplexity of a text as llama.cpp's `llama-perplexity` computes it, so herd and llama.cpp
//! measure the same file the same way: the text is tokenized whole (with BOS when the tokenizer
//! adds one, special-token text as plain text), cut into chunks of `context` tokens (the rest
//! dropped), each chunk evaluated on its own with its first token replaced by BOS (when the
//! tokenizer adds one); only the second half of each chunk is scored — every token from position
//! `context / 2 + 1` on, given all of the chunk before it — so every scored token has at least
//! half a context of history. The mean negative log-likelihood's exponential is the perplexity;
//! its ± is llama.cpp's (the standard error of the mean NLL, times the perplexity).
//!
//! The log-softmax follows llama.cpp's `log_softmax`: the maximum in f32, the sum of `exp` in
//! f64, the NLL summed in f64.

use anyhow::{bail, Result};
use candle_core::Tensor;
use herd_model::{Llama, SequenceLayout};
use herd_tokenizer::Tokenizer;
use serde::Serialize;

/// What a perplexity run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Perplexity {
    /// Tokens of the whole text.
    pub tokens: usize,
    /// Chunks evaluated.
    pub chunks: usize,
    /// Tokens scored (`chunks · (context − context/2 − 1)`).
    pub scored: usize,
    /// Mean negative log-likelihood per scored token (nats).
    pub nll: f64,
    /// `exp(nll)`.
    pub ppl: f64,
    /// llama.cpp's uncertainty of `ppl`.
    pub ppl_error: f64,
    /// The running perplexity after each chunk (what llama.cpp prints as `[i]ppl`).
    pub running: Vec<f64>,
}

/// `-log p(token)` from `logits`, as llama.cpp's `log_softmax`.
fn nll_of(logits: &[f32], token: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    -(f64::from(logits[token as usize] - max) - sum.ln())
}

/// The perplexity of `text` under `model` in chunks of `context` tokens (at most `max_chunks`
/// of them); `on_chunk` sees the chunk number and the running perplexity.
pub fn perplexity(
    model: &Llama,
    tokenizer: &Tokenizer,
    text: &str,
    context: usize,
    max_chunks: Option<usize>,
    mut on_chunk: impl FnMut(usize, usize, f64),
) -> Result<Perplexity> {
    if context < 4 || context > model.config().max_seq_len {
        bail!(
            "a context of {context} tokens: it must be 4 to the model's {}",
            model.config().max_seq_len
        );
    }
    let mut tokens = tokenizer.encode_prompt(text, false)?;
    let available = tokens.len() / context;
    let chunks = max_chunks.map_or(available, |m| m.min(available));
    if chunks == 0 {
        bail!(
            "the text has {} tokens, fewer than one chunk of {context}: give a longer text or a \
             smaller --context",
            tokens.len()
        );
    }
    let first = context / 2;
    let (mut nll, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
    let mut running = Vec::with_capacity(chunks);
    for chunk in 0..chunks {
        let start = chunk * context;
        let original = tokens[start];
        if let Some(bos) = tokenizer.prompt_bos() {
            tokens[start] = bos;
        }
        let ids = &tokens[start..start + context];
        let input = Tensor::new(ids, model.device())?.unsqueeze(0)?;
        let hidden = model.hidden_states(&input, &SequenceLayout::causal(1, context, 0), None)?;
        // Only the scored positions go through the output layer (the vocabulary-wide matrix).
        let scored = hidden.narrow(1, first, context - 1 - first)?;
        let logits = model.logits(&scored)?.squeeze(0)?.to_vec2::<f32>()?;
        tokens[start] = original;
        for (row, j) in logits.iter().zip(first..context - 1) {
            let v = nll_of(row, tokens[start + j + 1]);
            nll += v;
            nll2 += v * v;
            count += 1;
        }
        running.push((nll / count as f64).exp());
        on_chunk(chunk + 1, chunks, running[chunk]);
    }
    let mean = nll / count as f64;
    let ppl = mean.exp();
    let variance = nll2 / count as f64 - mean * mean;
    let ppl_error = if variance > 0.0 && count > 1 {
        (variance / (count - 1) as f64).sqrt() * ppl
    } else {
        0.0
    };
    Ok(Perplexity {
        tokens: tokens.len(),
        chunks,
        scored: count,
        nll: mean,
        ppl,
        ppl_error,
        running,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nll_is_a_log_softmax() {
        let logits = [1.0f32, 2.0, 3.0];
        let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        let expected = -(3.0f64.exp() / z).ln();
        assert!((nll_of(&logits, 2) - expected).abs() < 1e-6);
        // Shifting every logit changes nothing.
        let shifted = logits.map(|l| l + 1000.0);
        assert!((nll_of(&shifted, 2) - expected).abs() < 1e-6);
    }
}

//! Autoregressive generation on the KV cache: the prompt is processed once, then one token per
//! step, until a stop token or the token budget. A [`Session`] keeps its cache between calls, so
//! a chat only processes what each new turn adds.

use std::time::Instant;

use anyhow::{bail, Result};
use herd_model::{Llama, PagedKv, PagedSeq};
use serde::Serialize;

use crate::sampling::{log_softmax, log_sum_exp, top_k_logprobs, Sampler, SamplingConfig};

/// Prompt tokens a sequence processes per step: long prompts go through the model in chunks of
/// this many, here and in the serving engine alike (the chunking decides the arithmetic, so the
/// two must agree for a request to give the same tokens in both).
pub const PREFILL_CHUNK: usize = 512;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateConfig {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Token choice.
    pub sampling: SamplingConfig,
    /// Tokens that end generation (not emitted).
    pub stop_tokens: Vec<u32>,
    /// Alternatives to report per generated token (0: none).
    pub top_logprobs: usize,
}

/// One generated token with its log-probability under the model (before sampling filters).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeneratedToken {
    /// The token id.
    pub id: u32,
    /// `log p(id | context)`.
    pub logprob: f32,
    /// The most likely alternatives as `(id, logprob)`, best first.
    pub top: Vec<(u32, f32)>,
}

impl GeneratedToken {
    /// The next token drawn by `sampler` from `logits` (`context`: the tokens so far, for the
    /// penalties), with its log-probability and the `top` most likely alternatives.
    pub fn draw(sampler: &mut Sampler, logits: &[f32], context: &[u32], top: usize) -> Self {
        let id = sampler.sample(logits, context);
        GeneratedToken {
            id,
            logprob: (f64::from(logits[id as usize]) - log_sum_exp(logits)) as f32,
            top: if top == 0 {
                Vec::new()
            } else {
                top_k_logprobs(&log_softmax(logits), top)
            },
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A stop token was produced.
    Stop,
    /// The token budget ran out.
    Length,
    /// The caller stopped it.
    Cancelled,
}

/// The result of one generation.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    /// Generated tokens (the stop token excluded).
    pub tokens: Vec<GeneratedToken>,
    /// The stop token, when one ended generation.
    pub stop_token: Option<u32>,
    /// Why it ended.
    pub finish: FinishReason,
    /// Prompt tokens the model had to process (those not already cached).
    pub prompt_tokens: usize,
    /// Seconds spent on the prompt.
    pub prompt_seconds: f64,
    /// Seconds spent generating.
    pub decode_seconds: f64,
}

/// A model with a KV cache and the tokens it holds. The cache is the serving engine's paged
/// one, with a table of blocks of its own, so a session computes what the engine computes.
pub struct Session<'m> {
    model: &'m Llama,
    kv: PagedKv,
    blocks: Vec<u32>,
    capacity: usize,
    tokens: Vec<u32>,
}

impl<'m> Session<'m> {
    /// A session whose cache holds up to `capacity` tokens.
    pub fn new(model: &'m Llama, capacity: usize) -> Session<'m> {
        let (kv, blocks) = PagedKv::single(model.config(), capacity);
        Session {
            model,
            kv,
            blocks,
            capacity,
            tokens: Vec::new(),
        }
    }

    /// Tokens in the cache.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Runs `tokens` after what is cached, in chunks of [`PREFILL_CHUNK`] through the same
    /// batched step the serving engine runs (so a request gives the same tokens here and there),
    /// and returns the logits of the last position.
    fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let mut logits = Vec::new();
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            let seq = PagedSeq {
                blocks: &self.blocks,
                cached: self.tokens.len(),
            };
            let hidden = self.model.step(&[chunk], &mut self.kv, &[seq])?;
            logits = self
                .model
                .logits(&hidden)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            self.tokens.extend_from_slice(chunk);
        }
        Ok(logits)
    }

    /// Generates a continuation of `prompt` (the whole context, not just a new turn). When the
    /// cache holds a prefix of `prompt`, only the rest is processed. `on_token` sees each token
    /// as it is produced and may return `false` to stop.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        config: &GenerateConfig,
        mut on_token: impl FnMut(&GeneratedToken) -> Result<bool>,
    ) -> Result<Generation> {
        if prompt.is_empty() {
            bail!("the prompt is empty: nothing to continue from");
        }
        config.sampling.validate().map_err(anyhow::Error::msg)?;
        let mut reused = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        if reused < self.tokens.len() || reused == prompt.len() {
            // The cache holds something else (or everything): start over.
            self.tokens.clear();
            reused = 0;
        }
        let budget = self.capacity.saturating_sub(prompt.len());
        if budget == 0 {
            bail!(
                "the prompt has {} tokens; the context holds {}",
                prompt.len(),
                self.capacity
            );
        }
        let start = Instant::now();
        let mut logits = self.feed(&prompt[reused..])?;
        let prompt_seconds = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let mut sampler = Sampler::new(config.sampling.clone());
        let mut tokens: Vec<GeneratedToken> = Vec::new();
        let mut finish = FinishReason::Length;
        let mut stop_token = None;
        for step in 0..config.max_tokens.min(budget) {
            let token =
                GeneratedToken::draw(&mut sampler, &logits, &self.tokens, config.top_logprobs);
            let id = token.id;
            if config.stop_tokens.contains(&id) {
                finish = FinishReason::Stop;
                stop_token = Some(id);
                break;
            }
            let go_on = on_token(&token)?;
            tokens.push(token);
            if !go_on {
                finish = FinishReason::Cancelled;
                break;
            }
            if step + 1 < config.max_tokens.min(budget) {
                logits = self.feed(&[id])?;
            }
        }
        Ok(Generation {
            tokens,
            stop_token,
            finish,
            prompt_tokens: prompt.len() - reused,
            prompt_seconds,
            decode_seconds: start.elapsed().as_secs_f64(),
        })
    }
}

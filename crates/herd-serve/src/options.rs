//! The sampling fields both endpoints share (`temperature`, `top_p`, `top_k`, `min_p`, `seed`,
//! penalties, `n`, `stop`, `max_tokens`), checked and turned into the engine's settings.

use herd_infer::SamplingConfig;
use serde::Deserialize;

use crate::body::OneOrMany;
use crate::error::ApiError;

/// Sampling fields of a request body; absent ones take OpenAI's defaults.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SamplingFields {
    /// Softmax temperature (OpenAI's default 1; 0 is greedy).
    pub temperature: Option<f32>,
    /// Nucleus mass (default 1).
    pub top_p: Option<f32>,
    /// Keep the k most likely tokens (0 or -1: all), as vLLM and llama-server take it.
    pub top_k: Option<i64>,
    /// Drop tokens below this share of the best one's probability (default 0).
    pub min_p: Option<f32>,
    /// Seed of the draws; the same seed gives the same tokens. Absent: a fresh one.
    pub seed: Option<u64>,
    /// OpenAI's presence penalty, -2 to 2.
    pub presence_penalty: Option<f32>,
    /// OpenAI's frequency penalty, -2 to 2.
    pub frequency_penalty: Option<f32>,
    /// HF/llama.cpp's repetition penalty (default 1: off).
    pub repetition_penalty: Option<f32>,
    /// Choices to generate (default 1).
    pub n: Option<usize>,
    /// Strings that end generation (not included in the text).
    #[serde(default)]
    pub stop: OneOrMany,
    /// Generate through the end-of-turn token up to the budget (vLLM's and llama-server's
    /// extension, for benchmarks that need every reply the same length).
    #[serde(default)]
    pub ignore_eos: bool,
}

impl SamplingFields {
    /// The sampler settings of choice `index` (choice i draws with seed + i, so `n` choices
    /// differ and each is reproducible alone).
    pub fn sampling(&self, fresh_seed: u64) -> Result<SamplingConfig, ApiError> {
        let config = SamplingConfig {
            temperature: self.temperature.unwrap_or(1.0),
            top_k: self.top_k.unwrap_or(0).max(0) as usize,
            top_p: self.top_p.unwrap_or(1.0),
            min_p: self.min_p.unwrap_or(0.0),
            repetition_penalty: self.repetition_penalty.unwrap_or(1.0),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            seed: self.seed.unwrap_or(fresh_seed),
        };
        config.validate().map_err(|message| {
            let param = message
                .split('`')
                .nth(1)
                .map(str::to_string)
                .unwrap_or_default();
            ApiError::invalid(message, Some(&param))
        })?;
        Ok(config)
    }

    /// The tokens that end a reply: the model's, unless `ignore_eos`.
    pub fn stop_tokens(&self, model_stops: &[u32]) -> Vec<u32> {
        if self.ignore_eos {
            Vec::new()
        } else {
            model_stops.to_vec()
        }
    }

    /// `n`, checked against the server's limit.
    pub fn choices(&self, max: usize) -> Result<usize, ApiError> {
        match self.n.unwrap_or(1) {
            0 => Err(ApiError::invalid("`n` must be at least 1", Some("n"))),
            n if n > max => Err(ApiError::invalid(
                format!("`n` is {n}; this server allows at most {max} choices per request"),
                Some("n"),
            )),
            n => Ok(n),
        }
    }
}

/// `stream_options` of a streamed request.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send `usage` in a last chunk (with no choices) before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// A seed for a request that gave none: different per request.
pub fn fresh_seed() -> u64 {
    let mut nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    herd_util::seeded::splitmix64(&mut nanos)
}

/// The token budget: `requested` if it fits the context after the prompt (a 400 saying the
/// lengths otherwise), else whatever room is left.
pub fn token_budget(
    requested: Option<usize>,
    prompt: usize,
    context: usize,
    param: &str,
) -> Result<usize, ApiError> {
    let room = context.saturating_sub(prompt);
    match requested {
        Some(n) if n > room => Err(ApiError::invalid(
            format!(
                "this model's context is {context} tokens, but {} were asked for ({prompt} in the \
                 prompt, {n} to generate); ask for at most {room} with `{param}` or shorten the \
                 prompt",
                prompt + n
            ),
            Some(param),
        )),
        Some(n) => Ok(n),
        None => Ok(room),
    }
}

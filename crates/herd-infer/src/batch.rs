//! Several samples of one prompt (rejection sampling draws K responses per prompt) on the
//! serving engine: the K sequences decode together in its batched steps, sample `i` with seed
//! `seed + i`, so each is exactly the continuation a single generation with that seed gives.

use anyhow::{bail, Result};

use crate::engine::{Engine, Event, Request};
use crate::generate::{FinishReason, GenerateConfig};

/// One sampled continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Generated ids (the stop token excluded).
    pub ids: Vec<u32>,
    /// Why it ended.
    pub finish: FinishReason,
    /// Sum of the generated tokens' log-probabilities under the model.
    pub logprob: f64,
}

/// `n` continuations of `prompt` on `engine`. Sample `i` draws with seed
/// `config.sampling.seed + i`, so it is the continuation a single-sample generation with that
/// seed gives.
pub fn sample_many(
    engine: &Engine,
    prompt: &[u32],
    n: usize,
    config: &GenerateConfig,
) -> Result<Vec<Sample>> {
    if prompt.is_empty() || n == 0 {
        bail!("sampling needs a prompt and at least one sample");
    }
    let mut channels = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let mut config = config.clone();
        config.sampling.seed = config.sampling.seed.wrapping_add(i);
        let request = Request {
            prompt: prompt.to_vec(),
            config,
            prompt_logprobs: None,
        };
        channels.push(engine.submit(request)?);
    }
    channels
        .into_iter()
        .map(|mut events| {
            let mut sample = Sample {
                ids: Vec::new(),
                finish: FinishReason::Length,
                logprob: 0.0,
            };
            while let Some(event) = events.blocking_recv() {
                match event {
                    Event::Token(token) => {
                        sample.ids.push(token.id);
                        sample.logprob += f64::from(token.logprob);
                    }
                    Event::Finished(finished) => {
                        sample.finish = finished.finish;
                        return Ok(sample);
                    }
                    Event::Prompt(_) => {}
                    Event::Failed(message) => bail!("sampling failed: {message}"),
                }
            }
            bail!("the engine stopped before the sample ended")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::EngineConfig;
    use crate::generate::Session;
    use crate::sampling::SamplingConfig;
    use candle_core::{DType, Device};
    use herd_model::{Llama, LlamaConfig};

    fn tiny() -> Llama {
        let config = LlamaConfig {
            dim: 32,
            head_dim: 8,
            ffn_dim: 64,
            max_seq_len: 128,
            ..herd_model::seeded_weights::small_config()
        };
        let dev = Device::Cpu;
        let weights = herd_model::seeded_weights::weights(&config, &dev).unwrap();
        Llama::load(config, &weights, DType::F32, &dev).unwrap()
    }

    /// Each sample, decoded beside the others, is the single-sample generation with its seed,
    /// token for token.
    #[test]
    fn batched_samples_equal_one_at_a_time_generation() {
        let model = tiny();
        let prompt = [1u32, 7, 42, 9, 3];
        let config = GenerateConfig {
            max_tokens: 12,
            sampling: SamplingConfig {
                temperature: 1.0,
                top_p: 0.95,
                seed: 11,
                ..SamplingConfig::default()
            },
            stop_tokens: vec![5, 6, 8],
            top_logprobs: 0,
        };
        let engine = Engine::start(Arc::new(tiny()), EngineConfig::default());
        let one = sample_many(&engine, &prompt, 1, &config).unwrap();
        let batched = sample_many(&engine, &prompt, 4, &config).unwrap();
        assert_eq!(
            (&one[0].ids, one[0].finish),
            (&batched[0].ids, batched[0].finish)
        );
        for (i, sample) in batched.iter().enumerate() {
            let mut alone = config.clone();
            alone.sampling.seed += i as u64;
            let mut session = Session::new(&model, 64);
            let g = session.generate(&prompt, &alone, |_| Ok(true)).unwrap();
            let ids: Vec<u32> = g.tokens.iter().map(|t| t.id).collect();
            assert_eq!(sample.ids, ids, "sample {i}");
            assert_eq!(sample.finish, g.finish, "sample {i}");
            let logprob: f64 = g.tokens.iter().map(|t| f64::from(t.logprob)).sum();
            assert!((sample.logprob - logprob).abs() < 1e-4, "sample {i}");
        }
        assert!(
            batched.windows(2).any(|w| w[0].ids != w[1].ids),
            "different seeds give different samples"
        );
    }
}

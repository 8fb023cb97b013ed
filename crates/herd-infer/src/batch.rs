//! Several samples of one prompt at once (rejection sampling draws K responses per prompt):
//! the prompt is processed once, its KV cache repeated per sample, then each step decodes one
//! token for every sample in a single batched forward pass. On a CPU a decode step is bound by
//! reading the weights, so K rows cost little more than one.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use herd_model::{Llama, SequenceLayout};

use crate::generate::{FinishReason, GenerateConfig};
use crate::sampling::{log_softmax, Sampler, SamplingConfig};

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

/// `n` continuations of `prompt`. Sample `i` draws with seed `config.sampling.seed + i`, so it
/// is the continuation a single-sample generation with that seed gives.
pub fn sample_many(
    model: &Llama,
    prompt: &[u32],
    n: usize,
    config: &GenerateConfig,
) -> Result<Vec<Sample>> {
    if prompt.is_empty() || n == 0 {
        bail!("sampling needs a prompt and at least one sample");
    }
    config.sampling.validate().map_err(anyhow::Error::msg)?;
    let context = model.config().max_seq_len;
    if prompt.len() >= context {
        bail!(
            "the prompt has {} tokens; the model's context holds {context}",
            prompt.len()
        );
    }
    let capacity = (prompt.len() + config.max_tokens).min(context);
    let device = model.device();
    let mut cache = model.new_cache(capacity);
    let input = Tensor::new(prompt, device)?.unsqueeze(0)?;
    let hidden = model.hidden_states(
        &input,
        &SequenceLayout::causal(1, prompt.len(), 0),
        Some(&mut cache),
    )?;
    let last = model
        .logits(&hidden.narrow(1, prompt.len() - 1, 1)?)?
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?;
    let mut logits = vec![last; n];
    let mut cache = cache.repeat_rows(n)?;
    let mut samplers: Vec<Sampler> = (0..n as u64)
        .map(|i| {
            Sampler::new(SamplingConfig {
                seed: config.sampling.seed.wrapping_add(i),
                ..config.sampling.clone()
            })
        })
        .collect();
    let mut contexts: Vec<Vec<u32>> = vec![prompt.to_vec(); n];
    let mut samples: Vec<Sample> = (0..n)
        .map(|_| Sample {
            ids: Vec::new(),
            finish: FinishReason::Length,
            logprob: 0.0,
        })
        .collect();
    let mut running: Vec<bool> = vec![true; n];
    for step in 0..config.max_tokens {
        let mut next = vec![0u32; n];
        for i in 0..n {
            if !running[i] {
                continue;
            }
            let id = samplers[i].sample(&logits[i], &contexts[i]);
            if config.stop_tokens.contains(&id) {
                samples[i].finish = FinishReason::Stop;
                running[i] = false;
                continue;
            }
            samples[i].logprob += f64::from(log_softmax(&logits[i])[id as usize]);
            samples[i].ids.push(id);
            contexts[i].push(id);
            next[i] = id;
        }
        if !running.contains(&true) || step + 1 == config.max_tokens {
            break;
        }
        // Finished rows decode a filler token whose output is ignored.
        let input = Tensor::from_vec(next, (n, 1), device)?;
        let layout = SequenceLayout::causal(n, 1, cache.len());
        let hidden = model.hidden_states(&input, &layout, Some(&mut cache))?;
        logits = model
            .logits(&hidden)?
            .squeeze(1)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::Session;
    use candle_core::Device;
    use herd_model::LlamaConfig;

    fn tiny() -> Llama {
        let config = LlamaConfig {
            vocab_size: 96,
            dim: 32,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 8,
            ffn_dim: 64,
            max_seq_len: 128,
            ..LlamaConfig::preset("llama3.2-1b").unwrap()
        };
        let dev = Device::Cpu;
        let weights = herd_model::seeded_weights::weights(&config, &dev).unwrap();
        Llama::load(config, &weights, DType::F32, &dev).unwrap()
    }

    /// Each batched sample is the single-sample generation with its seed, token for token.
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
        let one = sample_many(&model, &prompt, 1, &config).unwrap();
        let batched = sample_many(&model, &prompt, 4, &config).unwrap();
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

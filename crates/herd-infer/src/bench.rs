//! Prompt-processing and decode speed, measured like llama.cpp's `llama-bench` (`pp` and `tg`):
//! a prompt of `prompt_len` tokens in one pass, and `gen_len` single-token steps on the paged
//! cache, through the step generation and serving run.

use std::time::Instant;

use anyhow::Result;
use herd_model::{Llama, PagedKv, PagedSeq};
use serde::Serialize;

/// Tokens per second of one test, over repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Tokens per repetition.
    pub tokens: usize,
    /// Mean tokens/s.
    pub mean: f64,
    /// Standard deviation of tokens/s.
    pub stdev: f64,
}

fn throughput(tokens: usize, seconds: &[f64]) -> Throughput {
    let rates: Vec<f64> = seconds.iter().map(|s| tokens as f64 / s).collect();
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    let var = rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>()
        / rates.len().max(2).saturating_sub(1) as f64;
    Throughput {
        tokens,
        mean,
        stdev: var.sqrt(),
    }
}

fn tokens(n: usize, vocab: usize, salt: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 7919 + salt * 104_729 + 13) % vocab) as u32)
        .collect()
}

/// Checks that `tokens` fit the model's context (a longer test would size its cache past
/// what the model was made for, and past the machine's memory).
fn check_length(model: &Llama, what: &str, tokens: usize) -> Result<()> {
    let context = model.config().max_seq_len;
    if tokens == 0 || tokens > context {
        anyhow::bail!(
            "{what} of {tokens} tokens: it must be 1 to the model's context of {context}"
        );
    }
    Ok(())
}

/// Prompt processing of `prompt_len` tokens, `repetitions` times after one warm-up.
pub fn prompt_processing(
    model: &Llama,
    prompt_len: usize,
    repetitions: usize,
) -> Result<Throughput> {
    check_length(model, "a prompt", prompt_len)?;
    let mut seconds = Vec::new();
    for r in 0..=repetitions {
        let ids = tokens(prompt_len, model.config().vocab_size, r);
        let (mut kv, table) = PagedKv::single(model.config(), prompt_len);
        let start = Instant::now();
        let seq = PagedSeq {
            blocks: &table,
            cached: 0,
        };
        let hidden = model.step(&[&ids], &mut kv, &[seq])?;
        model.logits(&hidden)?.to_vec2::<f32>()?;
        if r > 0 {
            seconds.push(start.elapsed().as_secs_f64());
        }
    }
    Ok(throughput(prompt_len, &seconds))
}

/// Decoding of `gen_len` tokens one at a time, `repetitions` times after one warm-up.
pub fn decode(model: &Llama, gen_len: usize, repetitions: usize) -> Result<Throughput> {
    check_length(model, "a decode test", gen_len)?;
    let mut seconds = Vec::new();
    for r in 0..=repetitions {
        let ids = tokens(gen_len, model.config().vocab_size, r);
        let (mut kv, table) = PagedKv::single(model.config(), gen_len);
        let start = Instant::now();
        for (i, &id) in ids.iter().enumerate() {
            let seq = PagedSeq {
                blocks: &table,
                cached: i,
            };
            let hidden = model.step(&[&[id]], &mut kv, &[seq])?;
            model.logits(&hidden)?.to_vec2::<f32>()?;
        }
        if r > 0 {
            seconds.push(start.elapsed().as_secs_f64());
        }
    }
    Ok(throughput(gen_len, &seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use herd_model::LlamaConfig;

    #[test]
    fn tests_longer_than_the_context_are_refused_before_sizing_a_cache() {
        let config = LlamaConfig {
            max_seq_len: 16,
            ..herd_model::seeded_weights::tiny_config()
        };
        let weights = herd_model::seeded_weights::weights(&config, &Device::Cpu).unwrap();
        let model = Llama::load(config, &weights, DType::F32, &Device::Cpu).unwrap();
        let err = prompt_processing(&model, 1 << 30, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("context of 16"), "{err}");
        assert!(decode(&model, 17, 1).is_err());
        assert_eq!(prompt_processing(&model, 16, 1).unwrap().tokens, 16);
    }
}

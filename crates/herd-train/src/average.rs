//! Checkpoint averaging (Polyak averaging, paper §3.4.3): the element-wise mean of the weights
//! of several checkpoints of the same shape, accumulated in f64.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use herd_model::checkpoint::hf;
use herd_model::{LlamaConfig, Weight, Weights};

use crate::error::{Error, Result};

/// The mean of the HF model folders `dirs`, with the first one's config.
pub fn average_checkpoints(dirs: &[&Path], device: &Device) -> Result<(LlamaConfig, Weights)> {
    let first = dirs
        .first()
        .ok_or_else(|| Error::Checkpoint("nothing to average".into()))?;
    let (config, base) = hf::load(first, device)?;
    let mut sums: Vec<(String, Tensor, DType)> = Vec::new();
    for (name, weight) in base.iter() {
        let dense = weight.to_dense(DType::F64)?;
        let dtype = match weight {
            Weight::Dense(t) => t.dtype(),
            Weight::Quantized(_) => DType::F32,
        };
        sums.push((name.clone(), dense, dtype));
    }
    for dir in &dirs[1..] {
        let (other_config, weights) = hf::load(dir, device)?;
        if other_config != config {
            return Err(Error::Checkpoint(format!(
                "{} has another shape than {}",
                dir.display(),
                first.display()
            )));
        }
        for (name, sum, _) in sums.iter_mut() {
            let w = weights.get(name, sum.dims())?.to_dense(DType::F64)?;
            *sum = (&*sum + w)?;
        }
        if weights.iter().count() != sums.len() {
            return Err(Error::Checkpoint(format!(
                "{} has other tensors than {}",
                dir.display(),
                first.display()
            )));
        }
    }
    let mut mean = Weights::new(first);
    for (name, sum, dtype) in sums {
        let t = (sum / dirs.len() as f64)?.to_dtype(dtype)?;
        mean.insert(name, Weight::Dense(t));
    }
    Ok((config, mean))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Parameters;

    fn config(n_layers: usize) -> LlamaConfig {
        LlamaConfig {
            vocab_size: 64,
            dim: 16,
            n_layers,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 8,
            ffn_dim: 32,
            ..LlamaConfig::preset("llama3.2-1b").unwrap()
        }
    }

    fn values(w: &Weight) -> Vec<f32> {
        w.to_dense(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// Three different checkpoints average to their element-wise mean, computed here value by
    /// value in f64 and rounded once to f32.
    #[test]
    fn the_average_of_different_checkpoints_is_their_elementwise_mean() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(1);
        let mut checkpoints = Vec::new();
        for seed in [3, 4, 5] {
            let params = Parameters::init(&config, seed, DType::F32, &Device::Cpu).unwrap();
            let path = dir.path().join(format!("seed-{seed}"));
            hf::save(&path, &config, &params.weights(), DType::F32, usize::MAX).unwrap();
            checkpoints.push((path, params.weights()));
        }
        let dirs: Vec<&Path> = checkpoints.iter().map(|(p, _)| p.as_path()).collect();
        let (_, mean) = average_checkpoints(&dirs, &Device::Cpu).unwrap();
        let mut differing = 0;
        for (name, first) in checkpoints[0].1.iter() {
            let all: Vec<Vec<f32>> = checkpoints
                .iter()
                .map(|(_, w)| values(w.get(name, &first.dims()).unwrap()))
                .collect();
            let expected: Vec<f32> = (0..all[0].len())
                .map(|i| ((all[0][i] as f64 + all[1][i] as f64 + all[2][i] as f64) / 3.0) as f32)
                .collect();
            differing += usize::from(all[0] != all[1]);
            assert_eq!(
                values(mean.get(name, &first.dims()).unwrap()),
                expected,
                "{name}"
            );
        }
        assert!(
            differing > 5,
            "the checkpoints must differ for the test to mean anything"
        );
    }

    #[test]
    fn checkpoints_of_another_shape_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (name, layers) in [("a", 1), ("b", 2)] {
            let config = config(layers);
            let params = Parameters::init(&config, 1, DType::F32, &Device::Cpu).unwrap();
            hf::save(
                &dir.path().join(name),
                &config,
                &params.weights(),
                DType::F32,
                usize::MAX,
            )
            .unwrap();
        }
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let err = average_checkpoints(&[&a, &b], &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("another shape"), "{err}");
    }
}

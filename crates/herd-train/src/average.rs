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

    /// The mean of two copies of a checkpoint is that checkpoint, bit for bit.
    #[test]
    fn averaging_identical_checkpoints_is_identity() {
        let dir = tempfile::tempdir().unwrap();
        let config = LlamaConfig {
            vocab_size: 64,
            dim: 16,
            n_layers: 1,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 8,
            ffn_dim: 32,
            ..LlamaConfig::preset("llama3.2-1b").unwrap()
        };
        let params = Parameters::init(&config, 3, DType::F32, &Device::Cpu).unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for d in [&a, &b] {
            hf::save(d, &config, &params.weights(), DType::F32, usize::MAX).unwrap();
        }
        let (_, mean) = average_checkpoints(&[&a, &b], &Device::Cpu).unwrap();
        let values = |w: &Weight| -> Vec<f32> {
            w.to_dense(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        for (name, weight) in params.weights().iter() {
            let averaged = mean.get(name, &weight.dims()).unwrap();
            assert_eq!(values(weight), values(averaged), "{name}");
        }
    }
}

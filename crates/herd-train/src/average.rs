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

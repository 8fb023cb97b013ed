//! RMSNorm (pre-normalisation of every Llama block), computed in f32 whatever the model dtype.

use candle_core::{DType, Result, Tensor};

/// `x / sqrt(mean(x²) + eps) · weight`.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// A norm with the given scale vector (kept in f32).
    pub fn new(weight: Tensor, eps: f64) -> Result<RmsNorm> {
        Ok(RmsNorm {
            weight: weight.to_dtype(DType::F32)?,
            eps,
        })
    }

    /// Normalises the last dimension of `x`; the result has `x`'s dtype.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let y = candle_nn::ops::rms_norm(&x.to_dtype(DType::F32)?, &self.weight, self.eps as f32)?;
        y.to_dtype(dtype)
    }
}

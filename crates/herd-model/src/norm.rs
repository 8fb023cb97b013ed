//! RMSNorm (pre-normalisation of every Llama block), computed in f32 (f64 for f64 models)
//! whatever the model dtype.
//!
//! candle's fused RMSNorm kernel has no backward pass, so when gradients are tracked (training)
//! the same formula runs as composed tensor ops, which autograd differentiates.

use candle_core::{DType, Result, Tensor};

/// The dtype reductions run in for activations of `dtype`: f32, or f64 for f64 models (which
/// exist for finite-difference gradient checks).
pub fn accumulation_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// `x / sqrt(mean(x²) + eps) · weight`.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// A norm with the given scale vector (kept in f32, or f64 when it is f64).
    pub fn new(weight: Tensor, eps: f64) -> Result<RmsNorm> {
        Ok(RmsNorm {
            weight: weight.to_dtype(accumulation_dtype(weight.dtype()))?,
            eps,
        })
    }

    /// Normalises the last dimension of `x`; the result has `x`'s dtype.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let wide = x.to_dtype(accumulation_dtype(dtype))?;
        let weight = self.weight.to_dtype(wide.dtype())?;
        // candle's kernel has no f64 either (f64 models exist for gradient checks).
        let y = if wide.track_op() || weight.track_op() || wide.dtype() == DType::F64 {
            let mean_square = wide.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
            wide.broadcast_div(&(mean_square + self.eps)?.sqrt()?)?
                .broadcast_mul(&weight)?
        } else {
            candle_nn::ops::rms_norm(&wide, &weight, self.eps as f32)?
        };
        y.to_dtype(dtype)
    }
}

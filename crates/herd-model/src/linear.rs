//! A bias-free linear layer whose weight is dense or block-quantized.

use candle_core::quantized::QMatMul;
use candle_core::{Module, Result, Tensor};

/// `y = x Wᵀ`, with `W` stored as `[out_features, in_features]`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: QMatMul,
}

impl Linear {
    /// Wraps a weight matrix.
    pub fn new(weight: QMatMul) -> Linear {
        Linear { weight }
    }

    /// Applies the layer to `x` of any rank; leading dimensions are folded into one matmul.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        if dims.len() <= 2 {
            return self.weight.forward(x);
        }
        let (lead, in_features) = dims.split_at(dims.len() - 1);
        let rows: usize = lead.iter().product();
        let y = self.weight.forward(&x.reshape((rows, in_features[0]))?)?;
        let mut out_dims = lead.to_vec();
        out_dims.push(y.dim(1)?);
        y.reshape(out_dims)
    }
}

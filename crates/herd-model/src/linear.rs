//! A bias-free linear layer whose weight is dense or block-quantized.
//! Q4_1, Q8_0 and F16 GGUF weights on the CPU run herd's kernels ([`crate::quantized`]); other
//! formats run candle's.

use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{DType, Device, Module, Result, Tensor};

use crate::quantized::QuantMatrix;
use crate::weights::Weight;

#[derive(Debug, Clone)]
enum Kernel {
    Candle(QMatMul),
    Ggml(QuantMatrix),
}

/// `y = x Wᵀ`, with `W` stored as `[out_features, in_features]`.
#[derive(Debug, Clone)]
pub struct Linear {
    kernel: Kernel,
}

impl Linear {
    /// A layer for `weight`: dense weights are cast to `dtype`, quantized ones stay quantized.
    pub fn new(weight: &Weight, dtype: DType) -> Result<Linear> {
        if let Weight::Quantized(q) = weight {
            if matches!(
                q.dtype(),
                GgmlDType::Q4_1 | GgmlDType::Q8_0 | GgmlDType::F16
            ) && q.device().is_cpu()
            {
                if let [rows, cols] = *q.shape().dims() {
                    if let Some(m) = QuantMatrix::new(q.dtype(), rows, cols, q.data()?.to_vec()) {
                        return Ok(Linear {
                            kernel: Kernel::Ggml(m),
                        });
                    }
                }
            }
        }
        Ok(Linear {
            kernel: Kernel::Candle(weight.to_matmul(dtype)?),
        })
    }

    /// Applies the layer to `x` of any rank; leading dimensions are folded into one matmul.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let (lead, in_features) = dims.split_at(dims.len() - 1);
        let rows: usize = lead.iter().product();
        let x2 = x.reshape((rows, in_features[0]))?;
        let y = match &self.kernel {
            Kernel::Candle(w) => w.forward(&x2)?,
            Kernel::Ggml(m) => {
                let input = x2.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                Tensor::from_vec(m.matmul(&input, rows), (rows, m.rows()), &Device::Cpu)?
            }
        };
        let mut out_dims = lead.to_vec();
        out_dims.push(y.dim(1)?);
        y.reshape(out_dims)
    }
}

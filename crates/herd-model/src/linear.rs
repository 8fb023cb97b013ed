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
                    if let Some(m) = QuantMatrix::new(q.dtype(), rows, cols, &q.data()?) {
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
        let [y] = Linear::forward_many([self], x)?;
        Ok(y)
    }

    /// Applies several layers to the same `x` (Q, K and V; gate and up). Layers on herd's
    /// kernels that share their input format run as one product (activations quantized once,
    /// one pass of the worker pool); others run one by one.
    pub fn forward_many<const K: usize>(layers: [&Linear; K], x: &Tensor) -> Result<[Tensor; K]> {
        let dims = x.dims();
        let (lead, in_features) = dims.split_at(dims.len() - 1);
        let rows: usize = lead.iter().product();
        let x2 = x.reshape((rows, in_features[0]))?;
        let shape = |y: Tensor| -> Result<Tensor> {
            let mut out_dims = lead.to_vec();
            out_dims.push(y.dim(1)?);
            y.reshape(out_dims)
        };
        let matrices: Vec<&QuantMatrix> = layers
            .iter()
            .filter_map(|l| match &l.kernel {
                Kernel::Ggml(m) => Some(m),
                Kernel::Candle(_) => None,
            })
            .collect();
        if matrices.len() == K && matrices.iter().all(|m| matrices[0].shares_input_with(m)) {
            let input = x2.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let ys = QuantMatrix::matmul_many(&matrices, &input, rows);
            let ys = ys
                .into_iter()
                .zip(&matrices)
                .map(|(y, m)| shape(Tensor::from_vec(y, (rows, m.rows()), &Device::Cpu)?))
                .collect::<Result<Vec<_>>>()?;
            return Ok(ys.try_into().expect("one product per layer"));
        }
        let ys = layers
            .iter()
            .map(|layer| {
                shape(match &layer.kernel {
                    Kernel::Candle(w) => w.forward(&x2)?,
                    Kernel::Ggml(m) => {
                        let input = x2.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                        Tensor::from_vec(m.matmul(&input, rows), (rows, m.rows()), &Device::Cpu)?
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ys.try_into().expect("one product per layer"))
    }
}

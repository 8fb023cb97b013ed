//! A bias-free linear layer whose weight is dense or block-quantized.
//! Q4_1, Q8_0 and F16 GGUF weights on the CPU run herd's kernels ([`crate::quantized`]); other
//! formats run candle's.

use candle_core::quantized::QMatMul;
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
            if let (&[rows, cols], true) = (q.shape().dims(), q.device().is_cpu()) {
                // `None` unless herd's kernels take this format.
                if let Some(m) = QuantMatrix::new(q.dtype(), rows, cols, &q.data()?) {
                    return Ok(Linear {
                        kernel: Kernel::Ggml(m),
                    });
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
    /// kernels that share their input format run as one product (activations made once, one
    /// pass of the worker pool); others run one by one.
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
        let mut ys: [Option<Tensor>; K] = std::array::from_fn(|_| None);
        let mut pending: Vec<(usize, &QuantMatrix)> = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            match &layer.kernel {
                Kernel::Candle(w) => ys[i] = Some(shape(w.forward(&x2)?)?),
                Kernel::Ggml(m) => pending.push((i, m)),
            }
        }
        if !pending.is_empty() {
            let input = x2.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            while let Some(&(_, first)) = pending.first() {
                let (group, rest): (Vec<_>, Vec<_>) = pending
                    .into_iter()
                    .partition(|(_, m)| first.shares_input_with(m));
                let matrices: Vec<&QuantMatrix> = group.iter().map(|&(_, m)| m).collect();
                let products = QuantMatrix::matmul_many(&matrices, &input, rows);
                for ((i, m), y) in group.into_iter().zip(products) {
                    let y = Tensor::from_vec(y, (rows, m.rows()), &Device::Cpu)?;
                    ys[i] = Some(shape(y)?);
                }
                pending = rest;
            }
        }
        Ok(ys.map(|y| y.expect("every layer applied")))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use candle_core::quantized::{GgmlDType, QTensor};

    use super::*;

    #[test]
    fn layers_together_equal_layers_alone() {
        let dev = Device::Cpu;
        let w = |seed: f64| (Tensor::arange(0f32, 256.0 * 64.0, &dev).unwrap() * seed).unwrap();
        let w = |seed| w(seed).sin().unwrap().reshape((64, 256)).unwrap();
        let quantized =
            |t: Tensor, dtype| Weight::Quantized(Arc::new(QTensor::quantize(&t, dtype).unwrap()));
        // herd's kernels (Q8_0, F16: different prepared inputs), candle's (Q4K, 256-wide), dense.
        let layers: Vec<Linear> = [
            quantized(w(0.1), GgmlDType::Q8_0),
            quantized(w(0.2), GgmlDType::Q4K),
            quantized(w(0.3), GgmlDType::F16),
            Weight::Dense(w(0.4)),
            quantized(w(0.5), GgmlDType::Q8_0),
        ]
        .iter()
        .map(|weight| Linear::new(weight, DType::F32).unwrap())
        .collect();
        let x = Tensor::randn(0f32, 1.0, (2, 3, 256), &dev).unwrap();
        let together = Linear::forward_many(
            [&layers[0], &layers[1], &layers[2], &layers[3], &layers[4]],
            &x,
        )
        .unwrap();
        for (layer, y) in layers.iter().zip(&together) {
            let alone = layer.forward(&x).unwrap();
            assert_eq!(y.dims(), alone.dims());
            let (y, alone) = (y.flatten_all().unwrap(), alone.flatten_all().unwrap());
            assert_eq!(y.to_vec1::<f32>().unwrap(), alone.to_vec1::<f32>().unwrap());
        }
    }
}

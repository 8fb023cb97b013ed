//! RMSNorm (pre-normalisation of every Llama block), computed in f32 (f64 for f64 models)
//! whatever the model dtype.
//!
//! On the CPU it runs herd's fused op, one pass forward and one backward (candle's fused
//! kernel has no backward pass); other devices use candle's kernel (inference).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use num_traits::Zero;
use rayon::prelude::*;

use crate::for_real_dtype;
use crate::kernel::{for_each_row, slice, storage, Real};

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
        let y = if wide.device().is_cpu() {
            wide.contiguous()?
                .apply_op2(&weight, RmsNormOp { eps: self.eps })?
        } else {
            candle_nn::ops::rms_norm(&wide, &weight, self.eps as f32)?
        };
        y.to_dtype(dtype)
    }
}

/// 1 / sqrt(mean(x²) + eps) of one row.
fn inv_rms<T: Real>(x: &[T], eps: f64) -> T {
    let sum: f64 = x.iter().map(|v| v.wide() * v.wide()).sum();
    T::narrow(1.0 / (sum / x.len() as f64 + eps).sqrt())
}

/// RMSNorm of the rows of `x` (last dimension) scaled by `w`.
#[derive(Debug, Clone, Copy)]
struct RmsNormOp {
    eps: f64,
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "herd-rms-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = wl.shape().elem_count();
        for_real_dtype!(xs, T => {
            let (x, w) = (slice::<T>(xs, xl)?, slice::<T>(ws, wl)?);
            let mut y = vec![T::zero(); x.len()];
            for_each_row(&mut y, d, |row, y| {
                let x = &x[row * d..(row + 1) * d];
                let r = inv_rms(x, self.eps);
                for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                    *y = x * r * w;
                }
            });
            Ok((storage(y), xl.shape().clone()))
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let both = x.apply_op3_no_bwd(w, &dy.contiguous()?, &RmsNormBackward { eps: self.eps })?;
        let n = x.elem_count();
        let dx = both.narrow(0, 0, n)?.reshape(x.shape())?;
        let dw = both.narrow(0, n, w.elem_count())?;
        Ok((Some(dx), Some(dw)))
    }
}

/// Gradients of [`RmsNormOp`]: `dx` (flattened) followed by `dw`, in one vector.
/// With `r = 1/rms(x)`: `dx = r·w·dy − r³·x·mean(w·dy·x)`, `dw = Σ_rows r·x·dy`.
struct RmsNormBackward {
    eps: f64,
}

/// Rows per parallel task of the backward pass (each task sums its own `dw`).
const ROWS_PER_TASK: usize = 64;

impl CustomOp3 for RmsNormBackward {
    fn name(&self) -> &'static str {
        "herd-rms-norm-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = wl.shape().elem_count();
        for_real_dtype!(xs, T => {
            let (x, w, g) = (slice::<T>(xs, xl)?, slice::<T>(ws, wl)?, slice::<T>(gs, gl)?);
            let mut out = vec![T::zero(); x.len() + d];
            let (dx, dw_out) = out.split_at_mut(x.len());
            let block = ROWS_PER_TASK * d;
            let partial: Vec<Vec<f64>> = dx
                .par_chunks_mut(block)
                .zip(x.par_chunks(block).zip(g.par_chunks(block)))
                .map(|(dx, (x, g))| {
                    let mut dw = vec![0f64; d];
                    for ((dx, x), g) in dx.chunks_mut(d).zip(x.chunks(d)).zip(g.chunks(d)) {
                        let r = inv_rms(x, self.eps).wide();
                        let dot: f64 = (0..d)
                            .map(|i| w[i].wide() * g[i].wide() * x[i].wide())
                            .sum();
                        let c = r * r * r * dot / d as f64;
                        for i in 0..d {
                            let (xi, gi) = (x[i].wide(), g[i].wide());
                            dx[i] = T::narrow(r * w[i].wide() * gi - c * xi);
                            dw[i] += r * xi * gi;
                        }
                    }
                    dw
                })
                .collect();
            for (i, dw) in dw_out.iter_mut().enumerate() {
                *dw = T::narrow(partial.iter().map(|p| p[i]).sum());
            }
            Ok((storage(out), Shape::from(x.len() + d)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::check::compare;
    use candle_core::{Device, Var};

    /// Forward and both gradients against the composed formula, in f64.
    #[test]
    fn fused_rms_norm_matches_the_composed_one() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f64, 2.0, (3, 70, 48), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(1f64, 0.3, 48, &dev).unwrap()).unwrap();
        let norm = RmsNorm::new(w.as_tensor().clone(), 1e-5).unwrap();
        let fused = norm.forward(&x).unwrap();
        let composed = candle_nn::ops::rms_norm_slow(&x, &w, 1e-5).unwrap();
        let (output, gradient) = compare(&fused, &composed, &[&x, &w]);
        assert!(output < 1e-12 && gradient < 1e-10, "{output} {gradient}");
    }
}

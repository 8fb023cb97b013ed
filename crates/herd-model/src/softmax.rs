//! Attention's softmax, fused: `softmax(scale · scores + mask)` over the keys in one pass, and
//! its gradient `scale · p ⊙ (dp − Σ dp ⊙ p)` in one pass, where the composed tensor-op version
//! made a buffer per step (scale, add, max, subtract, exp, sum, divide).
//!
//! `scores` is `[batch, heads, rows_per_head, keys]` in attention's folded layout, whose rows
//! cycle over the `t` query positions; `mask` is the additive `[batch|1, 1, t, keys]`.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use num_traits::{Float, Zero};
use rayon::prelude::*;

use crate::for_real_dtype;
use crate::kernel::{for_each_row, slice, storage, Real};

/// `softmax(scale · scores + mask)` over the last dimension; `t` is the number of query
/// positions (the mask's rows).
pub fn masked_softmax(
    scores: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
    t: usize,
) -> Result<Tensor> {
    let fused = scores.device().is_cpu() && matches!(scores.dtype(), DType::F32 | DType::F64);
    if !fused {
        let scaled = (scores * scale)?;
        let (b, h, r, k) = scaled.dims4()?;
        let masked = match mask {
            Some(m) => scaled
                .reshape((b, h, r / t, t, k))?
                .broadcast_add(&m.unsqueeze(1)?)?
                .reshape((b, h, r, k))?,
            None => scaled,
        };
        return candle_nn::ops::softmax(&masked, D::Minus1);
    }
    let scores = scores.contiguous()?;
    match mask {
        Some(m) => scores.apply_op2(&m.contiguous()?, MaskedSoftmax { scale, t }),
        None => scores.apply_op1(Softmax { scale }),
    }
}

/// Softmax of one row of `scale · x + mask` into `out`.
fn softmax_row<T: Real>(x: &[T], mask: Option<&[T]>, scale: T, out: &mut [T]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = x[i] * scale + mask.map_or(T::zero(), |m| m[i]);
    }
    let max = out.iter().copied().fold(T::neg_infinity(), Float::max);
    if max == T::neg_infinity() {
        out.fill(T::zero()); // a fully masked row (never in a causal mask) attends nothing
        return;
    }
    let mut sum = T::zero();
    for o in out.iter_mut() {
        *o = (*o - max).exp();
        sum += *o;
    }
    let inv = sum.recip();
    out.iter_mut().for_each(|o| *o *= inv);
}

/// Softmax without a mask (one new token attending a whole cache).
#[derive(Debug, Clone, Copy)]
struct Softmax {
    scale: f64,
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "herd-softmax"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let k = *xl.dims().last().expect("rank ≥ 1");
        for_real_dtype!(xs, T => {
            let x = slice::<T>(xs, xl)?;
            let scale = T::narrow(self.scale);
            let mut out = vec![T::zero(); x.len()];
            for_each_row(&mut out, k, |row, o| {
                softmax_row(&x[row * k..(row + 1) * k], None, scale, o)
            });
            Ok((storage(out), xl.shape().clone()))
        })
    }

    fn bwd(&self, _x: &Tensor, p: &Tensor, dp: &Tensor) -> Result<Option<Tensor>> {
        let dx = p.apply_op2_no_bwd(&dp.contiguous()?, &SoftmaxBackward { scale: self.scale })?;
        Ok(Some(dx))
    }
}

/// Softmax with attention's additive mask.
#[derive(Debug, Clone, Copy)]
struct MaskedSoftmax {
    scale: f64,
    t: usize,
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "herd-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ms: &CpuStorage,
        ml: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, h, r, k) = xl.shape().dims4()?;
        let mask_rows = ml.shape().elem_count() / k;
        if mask_rows != self.t && mask_rows != b * self.t {
            candle_core::bail!("softmax: mask {:?} for scores {:?}", ml.shape(), xl.shape());
        }
        let per_batch = h * r;
        for_real_dtype!(xs, T => {
            let (x, mask) = (slice::<T>(xs, xl)?, slice::<T>(ms, ml)?);
            let scale = T::narrow(self.scale);
            let mut out = vec![T::zero(); x.len()];
            for_each_row(&mut out, k, |row, o| {
                    let x = &x[row * k..(row + 1) * k];
                    let batch = if mask_rows == self.t { 0 } else { row / per_batch };
                    let m = (batch * self.t + row % self.t) * k;
                    softmax_row(x, Some(&mask[m..m + k]), scale, o);
                });
            Ok((storage(out), xl.shape().clone()))
        })
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _mask: &Tensor,
        p: &Tensor,
        dp: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = p.apply_op2_no_bwd(&dp.contiguous()?, &SoftmaxBackward { scale: self.scale })?;
        Ok((Some(dx), None))
    }
}

/// `scale · p ⊙ (dp − Σ dp ⊙ p)` row by row.
struct SoftmaxBackward {
    scale: f64,
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "herd-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        ps: &CpuStorage,
        pl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let k = *pl.dims().last().expect("rank ≥ 1");
        for_real_dtype!(ps, T => {
            let (p, g) = (slice::<T>(ps, pl)?, slice::<T>(gs, gl)?);
            let scale = T::narrow(self.scale);
            let mut out = vec![T::zero(); p.len()];
            out.par_chunks_mut(k)
                .zip(p.par_chunks(k).zip(g.par_chunks(k)))
                .for_each(|(o, (p, g))| {
                    let dot = p.iter().zip(g).fold(T::zero(), |acc, (&p, &g)| acc + p * g);
                    for i in 0..k {
                        o[i] = scale * p[i] * (g[i] - dot);
                    }
                });
            Ok((storage(out), pl.shape().clone()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::check::{compare, max_diff};
    use candle_core::{Device, Var};

    /// Forward and gradient against the composed tensor ops, in f64.
    #[test]
    fn fused_softmax_matches_the_composed_one() {
        let dev = Device::Cpu;
        let (b, h, g, t, k) = (2, 2, 3, 4, 4);
        let x =
            Var::from_tensor(&Tensor::randn(0f64, 1.0, (b, h, g * t, k), &dev).unwrap()).unwrap();
        let mut mask = vec![0f64; b * t * k];
        for (i, m) in mask.iter_mut().enumerate() {
            if (i % k) > (i / k) % t || i % 7 == 3 {
                *m = f64::NEG_INFINITY;
            }
        }
        let mask = Tensor::from_vec(mask, (b, 1, t, k), &dev).unwrap();
        let fused = masked_softmax(&x, Some(&mask), 0.7, t).unwrap();
        let composed = candle_nn::ops::softmax(
            &(x.as_tensor() * 0.7)
                .unwrap()
                .reshape((b, h, g, t, k))
                .unwrap()
                .broadcast_add(&mask.unsqueeze(1).unwrap())
                .unwrap()
                .reshape((b, h, g * t, k))
                .unwrap(),
            D::Minus1,
        )
        .unwrap();
        let (output, gradient) = compare(&fused, &composed, &[&x]);
        assert!(output < 1e-14 && gradient < 1e-13, "{output} {gradient}");
        let plain = masked_softmax(&x, None, 1.0, t).unwrap();
        let reference = candle_nn::ops::softmax(x.as_tensor(), D::Minus1).unwrap();
        assert!(max_diff(&plain, &reference) < 1e-14);
    }
}

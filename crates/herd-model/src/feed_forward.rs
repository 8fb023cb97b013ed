//! The SwiGLU feed-forward network of every Llama block: `down(silu(gate(x)) ⊙ up(x))`.
//!
//! `silu(gate) ⊙ up` is one fused op on the CPU (f32/f64), forward and backward; candle's
//! composed version made four buffers forward and more backward.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use num_traits::{One, Zero};
use rayon::prelude::*;

use crate::for_real_dtype;
use crate::kernel::{for_each_row, slice, storage};
use crate::linear::Linear;

/// Gate, up and down projections.
#[derive(Debug, Clone)]
pub struct FeedForward {
    pub(crate) gate: Linear,
    pub(crate) up: Linear,
    pub(crate) down: Linear,
}

impl FeedForward {
    /// Applies the network to `x` (`[..., dim]`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [gate, up] = Linear::forward_many([&self.gate, &self.up], x)?;
        let hidden = if gate.device().is_cpu() && matches!(gate.dtype(), DType::F32 | DType::F64) {
            gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)?
        } else {
            (candle_nn::ops::silu(&gate)? * up)?
        };
        self.down.forward(&hidden)
    }
}

/// Elements per parallel task.
const CHUNK: usize = 4096;

/// `silu(g) ⊙ u`, with `silu(g) = g·σ(g)`.
#[derive(Debug, Clone, Copy)]
struct SwiGlu;

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "herd-swiglu"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        for_real_dtype!(gs, T => {
            let (g, u) = (slice::<T>(gs, gl)?, slice::<T>(us, ul)?);
            let mut out = vec![T::zero(); g.len()];
            for_each_row(&mut out, CHUNK, |c, o| {
                let (g, u) = (&g[c * CHUNK..], &u[c * CHUNK..]);
                for i in 0..o.len() {
                    o[i] = g[i] / (T::one() + (-g[i]).exp()) * u[i];
                }
            });
            Ok((storage(out), gl.shape().clone()))
        })
    }

    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let both = g.apply_op3_no_bwd(u, &dy.contiguous()?, &SwiGluBackward)?;
        let n = g.elem_count();
        let dg = both.narrow(0, 0, n)?.reshape(g.shape())?;
        let du = both.narrow(0, n, n)?.reshape(u.shape())?;
        Ok((Some(dg), Some(du)))
    }
}

/// Gradients of [`SwiGlu`], `dg` then `du` in one vector:
/// `dg = dy·u·σ(g)·(1 + g·(1 − σ(g)))`, `du = dy·silu(g)`.
struct SwiGluBackward;

impl CustomOp3 for SwiGluBackward {
    fn name(&self) -> &'static str {
        "herd-swiglu-backward"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        for_real_dtype!(gs, T => {
            let (g, u, dy) = (slice::<T>(gs, gl)?, slice::<T>(us, ul)?, slice::<T>(ds, dl)?);
            let n = g.len();
            let mut out = vec![T::zero(); 2 * n];
            let (dg, du) = out.split_at_mut(n);
            dg.par_chunks_mut(CHUNK)
                .zip(du.par_chunks_mut(CHUNK))
                .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)).zip(dy.par_chunks(CHUNK)))
                .for_each(|((dg, du), ((g, u), dy))| {
                    for i in 0..dg.len() {
                        let sigma = T::one() / (T::one() + (-g[i]).exp());
                        let silu = g[i] * sigma;
                        dg[i] = dy[i] * u[i] * sigma * (T::one() + g[i] * (T::one() - sigma));
                        du[i] = dy[i] * silu;
                    }
                });
            Ok((storage(out), Shape::from(2 * n)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::check::compare;
    use candle_core::{Device, Var};

    #[test]
    fn fused_swiglu_matches_the_composed_one() {
        let dev = Device::Cpu;
        let g = Var::from_tensor(&(Tensor::randn(0f64, 3.0, (5, 9000), &dev).unwrap())).unwrap();
        let u = Var::from_tensor(&(Tensor::randn(0f64, 1.0, (5, 9000), &dev).unwrap())).unwrap();
        let fused = g.as_tensor().apply_op2(u.as_tensor(), SwiGlu).unwrap();
        let composed = (candle_nn::ops::silu(g.as_tensor()).unwrap() * u.as_tensor()).unwrap();
        let (output, gradient) = compare(&fused, &composed, &[&g, &u]);
        assert!(output < 1e-12 && gradient < 1e-12, "{output} {gradient}");
    }
}

//! AdamW (Loshchilov & Hutter) as PyTorch's `torch.optim.AdamW` computes it, with weight decay
//! only on the parameters [`Parameters::decays`] names (matrices), and its state as named tensors
//! for checkpoints.

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use herd_model::kernel::{par_for_each, Real};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::params::Parameters;

/// AdamW's hyper-parameters (paper §3.4: β₁ 0.9, β₂ 0.95, weight decay 0.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the root of the second moment.
    pub eps: f64,
    /// Decoupled weight decay (times the learning rate).
    pub weight_decay: f64,
}

/// AdamW's numbers for one step `t` at learning rate `lr`, in the parameters' type.
#[derive(Debug, Clone, Copy)]
pub struct StepConstants {
    beta1: f64,
    beta2: f64,
    eps: f64,
    /// `1 / √(1 − β₂ᵗ)`.
    inv_sqrt_bias2: f64,
    /// `lr / (1 − β₁ᵗ)`.
    step_size: f64,
    /// `1 − lr·wd`.
    shrink: f64,
}

impl StepConstants {
    /// The constants of step `t` (from 1) of `config` at `lr`.
    pub fn new(config: &AdamWConfig, t: u64, lr: f64) -> StepConstants {
        let t = t as i32;
        StepConstants {
            beta1: config.beta1,
            beta2: config.beta2,
            eps: config.eps,
            inv_sqrt_bias2: 1.0 / (1.0 - config.beta2.powi(t)).sqrt(),
            step_size: lr / (1.0 - config.beta1.powi(t)),
            shrink: 1.0 - lr * config.weight_decay,
        }
    }
}

/// Elements per parallel task of [`update_values`].
const CHUNK: usize = 1 << 14;

/// AdamW on one tensor's values in one pass, in place: the gradient `g` scaled by `clip`
/// (gradient clipping's coefficient, 1 for none), the moments `m` and `v` updated, then the
/// parameters `p` decayed (when `decays`) and stepped. What [`AdamW::step`] and herd-parallel's
/// sharded optimizer run.
pub fn update_values<T: Real>(
    c: &StepConstants,
    decays: bool,
    clip: T,
    p: &mut [T],
    g: &[T],
    m: &mut [T],
    v: &mut [T],
) {
    let [b1, b2, one_b1, one_b2] = [c.beta1, c.beta2, 1.0 - c.beta1, 1.0 - c.beta2].map(T::narrow);
    let [eps, inv_sqrt_bias2, step_size, shrink] =
        [c.eps, c.inv_sqrt_bias2, c.step_size, c.shrink].map(T::narrow);
    let mut chunks: Vec<_> = p
        .chunks_mut(CHUNK)
        .zip(g.chunks(CHUNK))
        .zip(m.chunks_mut(CHUNK).zip(v.chunks_mut(CHUNK)))
        .collect();
    par_for_each(&mut chunks, |_, ((p, g), (m, v))| {
        for j in 0..p.len() {
            let g = g[j] * clip;
            m[j] = m[j] * b1 + g * one_b1;
            v[j] = v[j] * b2 + g * g * one_b2;
            // Times the reciprocal, as candle divides a tensor by a number: the same values as
            // the composed tensor version had.
            let denom = v[j].sqrt() * inv_sqrt_bias2 + eps;
            if decays {
                p[j] *= shrink;
            }
            p[j] -= m[j] / denom * step_size;
        }
    });
}

/// One tensor's AdamW update from flat `p` and `g` and the moments: the new parameters and
/// moments, flat.
fn updated<T: Real>(
    c: &StepConstants,
    decays: bool,
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let flat =
        |t: &Tensor| -> Result<Vec<T>> { Ok(t.flatten_all()?.to_dtype(T::DTYPE)?.to_vec1::<T>()?) };
    let (mut p_values, g_values) = (flat(p)?, flat(g)?);
    let (mut m_values, mut v_values) = (flat(m)?, flat(v)?);
    update_values(
        c,
        decays,
        T::one(),
        &mut p_values,
        &g_values,
        &mut m_values,
        &mut v_values,
    );
    let device = p.device();
    let n = p_values.len();
    Ok((
        Tensor::from_vec(p_values, n, device)?,
        Tensor::from_vec(m_values, n, device)?,
        Tensor::from_vec(v_values, n, device)?,
    ))
}

/// The optimizer's moments and step count.
pub struct AdamW {
    config: AdamWConfig,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    steps: u64,
}

impl AdamW {
    /// Zero moments for `params`.
    pub fn new(params: &Parameters, config: AdamWConfig) -> Result<AdamW> {
        let zeros = || -> Result<Vec<Tensor>> {
            params
                .vars()
                .iter()
                .map(|v| Ok(v.as_tensor().zeros_like()?))
                .collect()
        };
        Ok(AdamW {
            config,
            m: zeros()?,
            v: zeros()?,
            steps: 0,
        })
    }

    /// One update of every parameter with its gradient (`grads` in parameter order):
    /// `p ← p·(1 − lr·wd) − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)`, each tensor in one pass over
    /// its values ([`update_values`]).
    pub fn step(&mut self, params: &Parameters, grads: &[Tensor], lr: f64) -> Result<()> {
        self.steps += 1;
        let constants = StepConstants::new(&self.config, self.steps, lr);
        for (i, (var, grad)) in params.vars().iter().zip(grads).enumerate() {
            let decays = params.decays(i);
            let (m, v) = (&mut self.m[i], &mut self.v[i]);
            let (p, g) = (var.as_tensor(), grad);
            let (new_p, new_m, new_v) = match var.dtype() {
                DType::F64 => updated::<f64>(&constants, decays, p, g, m, v)?,
                _ => updated::<f32>(&constants, decays, p, g, m, v)?,
            };
            let shape = var.shape().clone();
            var.set(&new_p.reshape(shape.clone())?)?;
            *m = new_m.reshape(shape.clone())?;
            *v = new_v.reshape(shape)?;
        }
        Ok(())
    }

    /// The moments as named tensors (`exp_avg.NAME`, `exp_avg_sq.NAME`).
    pub fn state(&self, params: &Parameters) -> HashMap<String, Tensor> {
        let mut state = HashMap::new();
        for (i, name) in params.names().iter().enumerate() {
            state.insert(format!("exp_avg.{name}"), self.m[i].clone());
            state.insert(format!("exp_avg_sq.{name}"), self.v[i].clone());
        }
        state
    }

    /// Restores moments saved by [`AdamW::state`] after `steps` updates.
    pub fn restore(
        &mut self,
        params: &Parameters,
        state: &HashMap<String, Tensor>,
        steps: u64,
    ) -> Result<()> {
        for (i, name) in params.names().iter().enumerate() {
            let like = self.m[i].clone();
            let get = |key: String| -> Result<Tensor> {
                let t = state
                    .get(&key)
                    .ok_or_else(|| Error::Checkpoint(format!("optimizer state has no {key}")))?;
                if t.dims() != like.dims() {
                    return Err(Error::Checkpoint(format!(
                        "optimizer tensor {key} is {:?}, the parameter is {:?}",
                        t.dims(),
                        like.dims()
                    )));
                }
                Ok(t.to_device(like.device())?)
            };
            self.m[i] = get(format!("exp_avg.{name}"))?;
            self.v[i] = get(format!("exp_avg_sq.{name}"))?;
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use herd_model::LlamaConfig;

    fn tiny() -> LlamaConfig {
        let mut c = LlamaConfig::preset("llama3.2-1b").unwrap();
        (c.vocab_size, c.dim, c.n_layers, c.n_heads, c.n_kv_heads) = (8, 4, 1, 2, 1);
        (c.head_dim, c.ffn_dim) = (2, 6);
        c
    }

    /// Two steps against the update written out by hand in f64 (PyTorch's formula).
    #[test]
    fn two_steps_match_the_closed_form() {
        let params = Parameters::init(&tiny(), 3, DType::F64, &Device::Cpu).unwrap();
        let config = AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let mut opt = AdamW::new(&params, config).unwrap();
        let index = params
            .names()
            .iter()
            .position(|n| n.ends_with("q_proj.weight"))
            .unwrap();
        let norm = params
            .names()
            .iter()
            .position(|n| n.ends_with("norm.weight"))
            .unwrap();
        let before: Vec<Vec<f64>> = [index, norm]
            .iter()
            .map(|&i| params.vars()[i].flatten_all().unwrap().to_vec1().unwrap())
            .collect();
        let grads_at = |k: f64| -> Vec<Tensor> {
            params
                .vars()
                .iter()
                .map(|v| (v.as_tensor().ones_like().unwrap() * k).unwrap())
                .collect()
        };
        let lrs = [1e-2, 5e-3];
        let gs = [0.5, -2.0];
        for (lr, g) in lrs.iter().zip(gs) {
            opt.step(&params, &grads_at(g), *lr).unwrap();
        }
        for (slot, &i) in [index, norm].iter().enumerate() {
            let after: Vec<f64> = params.vars()[i].flatten_all().unwrap().to_vec1().unwrap();
            for (p0, p2) in before[slot].iter().zip(after) {
                let (mut p, mut m, mut v) = (*p0, 0.0, 0.0);
                for (t, (lr, g)) in lrs.iter().zip(gs).enumerate() {
                    let t = t as i32 + 1;
                    if slot == 0 {
                        p *= 1.0 - lr * 0.1;
                    }
                    m = 0.9 * m + 0.1 * g;
                    v = 0.95 * v + 0.05 * g * g;
                    let denom = (v.sqrt() / (1.0 - 0.95f64.powi(t)).sqrt()) + 1e-8;
                    p -= lr / (1.0 - 0.9f64.powi(t)) * m / denom;
                }
                assert!((p - p2).abs() < 1e-14, "{p} vs {p2}");
            }
        }
    }
}

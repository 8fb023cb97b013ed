//! AdamW (Loshchilov & Hutter) as PyTorch's `torch.optim.AdamW` computes it, with weight decay
//! only on the parameters [`Parameters::decays`] names (matrices), and its state as named tensors
//! for checkpoints.

use std::collections::HashMap;

use candle_core::Tensor;
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
    /// `p ← p·(1 − lr·wd) − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)`.
    pub fn step(&mut self, params: &Parameters, grads: &[Tensor], lr: f64) -> Result<()> {
        self.steps += 1;
        let c = &self.config;
        let t = self.steps as i32;
        let (bias1, bias2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        for (i, (var, grad)) in params.vars().iter().zip(grads).enumerate() {
            let m = ((&self.m[i] * c.beta1)? + (grad * (1.0 - c.beta1))?)?;
            let v = ((&self.v[i] * c.beta2)? + (grad.sqr()? * (1.0 - c.beta2))?)?;
            let denom = ((v.sqrt()? / bias2.sqrt())? + c.eps)?;
            let p = var.as_tensor().detach();
            let p = if params.decays(i) {
                (p * (1.0 - lr * c.weight_decay))?
            } else {
                p
            };
            let update = (m.div(&denom)? * (lr / bias1))?;
            var.set(&(p - update)?)?;
            self.m[i] = m;
            self.v[i] = v;
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

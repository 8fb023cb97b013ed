//! The trainable parameters of a Llama model: one candle `Var` per HF-named tensor, their
//! initialisation, which of them take weight decay, and the model that computes with them.
//! Parameters of a model whose layers are split ([`herd_model::split`]) hold this part's slices;
//! values come in and go out whole (initialisation, checkpoints), so a run's files do not
//! depend on how it was split.

use std::ops::Range;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use herd_model::llama::tensor_shapes;
use herd_model::split::{part_of, split_dim, whole_of, Parts};
use herd_model::stage::holds;
use herd_model::{Llama, LlamaConfig, Weight, Weights};
use herd_util::seeded::{fnv1a64, splitmix64};

use crate::error::{Error, Result};

/// Standard deviation of the normal initialisation of matrices (HF's `initializer_range`).
pub const INIT_STD: f64 = 0.02;

/// Named `Var`s in [`tensor_shapes`] order.
pub struct Parameters {
    config: LlamaConfig,
    names: Vec<String>,
    vars: Vec<Var>,
    split: Option<Arc<dyn Parts>>,
    /// The blocks held, stage by stage: all of them as one, or a pipeline rank's stages
    /// ([`Parameters::stages`]).
    stages: Vec<Range<usize>>,
}

impl Parameters {
    /// Fresh parameters: matrices and embeddings from N(0, 0.02²), RMSNorm scales 1. Each
    /// tensor draws from its own stream (seed and name), so the values do not depend on the
    /// order tensors are made in.
    pub fn init(config: &LlamaConfig, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        Self::made(config, |name, dims| {
            let n: usize = dims.iter().product();
            let values: Vec<f64> = if dims.len() == 1 {
                vec![1.0; n]
            } else {
                normal_values(seed ^ fnv1a64(name.as_bytes()), n, INIT_STD)
            };
            Ok(Tensor::from_vec(values, dims, device)?.to_dtype(dtype)?)
        })
    }

    /// Parameters of the right shapes holding zeros, made without random draws: the trainer
    /// builds its step sharing on them before it knows whether a checkpoint's values or
    /// [`Parameters::init`]'s fill them.
    pub fn zeros(config: &LlamaConfig, dtype: DType, device: &Device) -> Result<Self> {
        Self::made(config, |_, dims| Ok(Tensor::zeros(dims, dtype, device)?))
    }

    /// One variable per tensor of `config`, each made by `make(name, dims)`.
    fn made(
        config: &LlamaConfig,
        make: impl Fn(&str, Vec<usize>) -> Result<Tensor>,
    ) -> Result<Self> {
        let mut names = Vec::new();
        let mut vars = Vec::new();
        for (name, dims) in tensor_shapes(config) {
            vars.push(Var::from_tensor(&make(&name, dims)?)?);
            names.push(name);
        }
        Ok(Parameters {
            config: config.clone(),
            names,
            vars,
            split: None,
            stages: whole_model(config),
        })
    }

    /// Parameters holding `weights` (a checkpoint), cast to `dtype`.
    pub fn from_weights(
        config: &LlamaConfig,
        weights: &Weights,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mut names = Vec::new();
        let mut vars = Vec::new();
        for (name, dims) in tensor_shapes(config) {
            let tensor = weights.get(&name, &dims)?.to_dense(dtype)?;
            vars.push(Var::from_tensor(&tensor.to_device(device)?)?);
            names.push(name);
        }
        Ok(Parameters {
            config: config.clone(),
            names,
            vars,
            split: None,
            stages: whole_model(config),
        })
    }

    /// Adds a tensor the Llama itself does not use (a reward model's `score.weight`); it is
    /// trained, checkpointed and decayed like the others.
    pub fn append(&mut self, name: impl Into<String>, tensor: &Tensor) -> Result<()> {
        self.vars.push(Var::from_tensor(tensor)?);
        self.names.push(name.into());
        Ok(())
    }

    /// This part's slices of the parameters of a model split by `split` (`None` keeps them
    /// whole).
    pub fn split_by(self, split: Option<Arc<dyn Parts>>) -> Result<Self> {
        let Some(split) = split else {
            return Ok(self);
        };
        let vars = self
            .names
            .iter()
            .zip(&self.vars)
            .map(|(name, var)| match split_dim(name) {
                None => Ok(var.clone()),
                Some(dim) => Ok(Var::from_tensor(&part_of(
                    var.as_tensor(),
                    dim,
                    split.parts(),
                    split.part(),
                )?)?),
            })
            .collect::<Result<_>>()?;
        Ok(Parameters {
            vars,
            split: Some(split),
            ..self
        })
    }

    /// The parameters of the pipeline stages that hold blocks `stages` ([`herd_model::stage`];
    /// one, or an interleaved rank's several): those blocks' tensors, the embedding with the
    /// first stage, the final norm and the output layer with the last.
    pub fn stages(self, stages: &[Range<usize>]) -> Result<Self> {
        let n_layers = self.config.n_layers;
        if let Some(bad) = stages.iter().find(|l| l.is_empty() || l.end > n_layers) {
            return Err(Error::Data(format!(
                "a stage of blocks {bad:?} of a model of {n_layers}"
            )));
        }
        let held = |name: &String| stages.iter().any(|l| holds(name, l, n_layers));
        let (names, vars) = self
            .names
            .into_iter()
            .zip(self.vars)
            .filter(|(name, _)| held(name))
            .unzip();
        Ok(Parameters {
            names,
            vars,
            stages: stages.to_vec(),
            ..self
        })
    }

    /// The exchange between the parts when the parameters are split.
    pub fn split(&self) -> Option<&Arc<dyn Parts>> {
        self.split.as_ref()
    }

    /// The dimension parameter `index` is split along, when split.
    pub fn split_dim(&self, index: usize) -> Option<usize> {
        self.split.as_ref().and(split_dim(&self.names[index]))
    }

    /// Each parameter's whole shape (of the model, not of this part's slice), in order.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        let parts = self.split.as_ref().map_or(1, |s| s.parts());
        (0..self.vars.len())
            .map(|i| {
                let mut dims = self.vars[i].dims().to_vec();
                if let Some(dim) = self.split_dim(i) {
                    dims[dim] *= parts;
                }
                (self.names[i].clone(), dims)
            })
            .collect()
    }

    /// Sets every variable to its tensor in `weights` (whole tensors of the same parameters: a
    /// checkpoint); split parameters take their part.
    pub fn set_values(&self, weights: &Weights) -> Result<()> {
        for (i, (name, dims)) in self.shapes().into_iter().enumerate() {
            let var = &self.vars[i];
            let mut tensor = weights.get(&name, &dims)?.to_dense(var.dtype())?;
            if let (Some(dim), Some(split)) = (self.split_dim(i), &self.split) {
                tensor = part_of(&tensor, dim, split.parts(), split.part())?;
            }
            var.set(&tensor.to_device(var.device())?)?;
        }
        Ok(())
    }

    /// The current values, whole: split parameters are gathered from every part (a collective:
    /// every part calls it), the others share storage with the variables.
    pub fn whole_weights(&self) -> Result<Weights> {
        let Some(split) = &self.split else {
            return Ok(self.weights());
        };
        let mut weights = Weights::new("<training>");
        for (i, (name, var)) in self.names.iter().zip(&self.vars).enumerate() {
            let tensor = match self.split_dim(i) {
                None => var.as_tensor().detach(),
                Some(dim) => whole_of(split.as_ref(), var.as_tensor(), dim)?,
            };
            weights.insert(name.clone(), Weight::Dense(tensor));
        }
        Ok(weights)
    }

    /// The model's shape.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The variable named `name`.
    pub fn var(&self, name: &str) -> Option<&Var> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| &self.vars[i])
    }

    /// HF names, in parameter order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The variables, in parameter order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// Whether weight decay applies: matrices (embeddings and projections), not norm scales.
    pub fn decays(&self, index: usize) -> bool {
        self.vars[index].rank() >= 2
    }

    /// The current values as [`Weights`] (sharing storage with the variables; this part's
    /// slices when split).
    pub fn weights(&self) -> Weights {
        self.weights_as(|t| t.clone())
    }

    fn weights_as(&self, tensor: impl Fn(&Tensor) -> Tensor) -> Weights {
        let mut weights = Weights::new("<training>");
        for (name, var) in self.names.iter().zip(&self.vars) {
            weights.insert(name.clone(), Weight::Dense(tensor(var.as_tensor())));
        }
        weights
    }

    /// One model per stage held, on `weights`.
    fn build(&self, weights: &Weights) -> Result<Vec<Llama>> {
        let var = &self.vars[0];
        let (dtype, device) = (var.dtype(), var.device());
        self.stages
            .iter()
            .map(|layers| {
                let (config, split) = (self.config.clone(), self.split.clone());
                Llama::load_stage(config, weights, dtype, device, split, layers.clone())
                    .map_err(Error::from)
            })
            .collect()
    }

    /// The one model of parameters that hold one stage (the whole model, unless cut).
    fn single(mut models: Vec<Llama>) -> Result<Llama> {
        match models.len() {
            1 => Ok(models.remove(0)),
            n => Err(Error::Data(format!(
                "these parameters hold {n} pipeline stages, not one model"
            ))),
        }
    }

    /// A model computing with these variables: gradients of its outputs reach them, and
    /// updates to them are seen by it.
    pub fn model(&self) -> Result<Llama> {
        Self::single(self.models()?)
    }

    /// A model on the current values that tracks no gradients (for validation and sampling
    /// during training); it shares storage with the variables.
    pub fn frozen_model(&self) -> Result<Llama> {
        Self::single(self.frozen_models()?)
    }

    /// [`Parameters::model`] of each stage held (a pipeline rank's), in order.
    pub fn models(&self) -> Result<Vec<Llama>> {
        self.build(&self.weights())
    }

    /// [`Parameters::frozen_model`] of each stage held, in order.
    pub fn frozen_models(&self) -> Result<Vec<Llama>> {
        self.build(&self.weights_as(Tensor::detach))
    }
}

/// The one stage of a model that is not cut into stages: all its blocks.
fn whole_model(config: &LlamaConfig) -> Vec<Range<usize>> {
    std::iter::once(0..config.n_layers).collect()
}

/// `n` draws of N(0, std²) from a splitmix64 stream (Box–Muller).
pub fn normal_values(seed: u64, n: usize, std: f64) -> Vec<f64> {
    let mut state = seed;
    let mut uniform = move || ((splitmix64(&mut state) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let (u1, u2) = (uniform(), uniform());
        let radius = (-2.0 * u1.ln()).sqrt() * std;
        let angle = 2.0 * std::f64::consts::PI * u2;
        out.push(radius * angle.cos());
        out.push(radius * angle.sin());
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_values_have_the_asked_moments() {
        let v = normal_values(7, 200_000, 0.02);
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 2e-4, "{mean}");
        assert!((var.sqrt() - 0.02).abs() < 2e-4, "{}", var.sqrt());
    }
}

//! Data parallelism with sharded optimizer state (ZeRO stage 2, FSDP's "shard grad and optimizer
//! state"; paper §3.3.1): each of the DP ranks computes an equal share of every batch's rows;
//! their gradients are summed in f32 by a reduce-scatter that leaves each rank the sum for its
//! 1/DP of the parameters; each rank clips by the global norm (one all-reduce) and applies AdamW
//! to its part, holding AdamW's moments for that part only — optimizer memory per rank falls as
//! 1/DP; an all-gather then gives every rank the updated parameters.
//!
//! The parameters are laid end to end in parameter order (one flat f32 vector, padded to a
//! multiple of DP), so a rank's part is a plain range of it. A checkpoint gathers the moments
//! back into herd-train's per-parameter layout, so a run saved under DP resumes under any other
//! DP degree or in one process.

use std::collections::HashMap;
use std::ops::Range;

use candle_core::Tensor;
use herd_train::adamw::AdamWConfig;
use herd_train::params::Parameters;
use herd_train::sharing::StepSharing;

use crate::collectives::Collectives;

/// One data-parallel rank's share of the step.
pub struct DataParallel<'g> {
    group: &'g dyn Collectives,
    config: AdamWConfig,
    /// Where each parameter starts in the flat vector, and its length.
    spans: Vec<Range<usize>>,
    /// The flat vector's length padded to a multiple of the group size.
    padded: usize,
    /// This rank's part of the flat vector.
    part: Range<usize>,
    /// Whether each element of the part takes weight decay.
    decays: Vec<bool>,
    m: Vec<f32>,
    v: Vec<f32>,
    steps: u64,
}

fn train_error(e: impl std::fmt::Display) -> herd_train::Error {
    herd_train::Error::Data(format!("data parallelism: {e}"))
}

impl<'g> DataParallel<'g> {
    /// The share of rank `group.rank()` of `group` (the data-parallel group) for `params`.
    pub fn new(
        group: &'g dyn Collectives,
        params: &Parameters,
        config: AdamWConfig,
    ) -> herd_train::Result<DataParallel<'g>> {
        let mut spans = Vec::new();
        let mut end = 0;
        for var in params.vars() {
            let n = var.elem_count();
            spans.push(end..end + n);
            end += n;
        }
        let size = group.size();
        let padded = end.div_ceil(size) * size;
        let per_rank = padded / size;
        let part = group.rank() * per_rank..(group.rank() + 1) * per_rank;
        let mut decays = vec![false; per_rank];
        for (i, span) in spans.iter().enumerate() {
            let overlap = span.start.max(part.start)..span.end.min(part.end);
            if params.decays(i) && !overlap.is_empty() {
                decays[overlap.start - part.start..overlap.end - part.start].fill(true);
            }
        }
        Ok(DataParallel {
            group,
            config,
            spans,
            padded,
            part,
            decays,
            m: vec![0.0; per_rank],
            v: vec![0.0; per_rank],
            steps: 0,
        })
    }

    /// `tensors` (one per parameter) laid end to end, padded with zeros.
    fn flatten(&self, tensors: &[Tensor]) -> herd_train::Result<Vec<f32>> {
        let mut flat = Vec::with_capacity(self.padded);
        for t in tensors {
            flat.extend(
                t.flatten_all()?
                    .to_dtype(candle_core::DType::F32)?
                    .to_vec1::<f32>()?,
            );
        }
        flat.resize(self.padded, 0.0);
        Ok(flat)
    }

    /// This rank's part of `tensors` laid end to end (padding as zeros), copying only that part.
    fn part_of(&self, tensors: &[Tensor]) -> herd_train::Result<Vec<f32>> {
        let mut part = Vec::with_capacity(self.part.len());
        for (t, span) in tensors.iter().zip(&self.spans) {
            let overlap = span.start.max(self.part.start)..span.end.min(self.part.end);
            if overlap.is_empty() {
                continue;
            }
            let values = t
                .flatten_all()?
                .narrow(0, overlap.start - span.start, overlap.len())?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?;
            part.extend(values);
        }
        part.resize(self.part.len(), 0.0);
        Ok(part)
    }

    /// The flat vector back as one tensor per parameter, shaped as `like`.
    fn unflatten(&self, flat: &[f32], like: &Parameters) -> herd_train::Result<Vec<Tensor>> {
        self.spans
            .iter()
            .zip(like.vars())
            .map(|(span, var)| {
                let t = Tensor::from_slice(&flat[span.clone()], var.dims(), var.device())?;
                Ok(t.to_dtype(var.dtype())?)
            })
            .collect()
    }

    /// Every rank's part of `part_values` gathered into the whole flat vector.
    fn gather(&self, part_values: &[f32]) -> herd_train::Result<Vec<f32>> {
        let mut whole = vec![0.0; self.padded];
        self.group
            .all_gather(part_values, &mut whole)
            .map_err(train_error)?;
        Ok(whole)
    }
}

impl StepSharing for DataParallel<'_> {
    fn rows(&self, rows: usize) -> herd_train::Result<Range<usize>> {
        let size = self.group.size();
        if !rows.is_multiple_of(size) {
            return Err(herd_train::Error::Data(format!(
                "a batch of {rows} rows does not split over {size} data-parallel ranks: make \
                 every stage's batch_rows a multiple of dp"
            )));
        }
        let per_rank = rows / size;
        let start = self.group.rank() * per_rank;
        Ok(start..start + per_rank)
    }

    fn total_loss(&self, share: f64) -> herd_train::Result<f64> {
        let mut sum = [share as f32];
        self.group.all_reduce_sum(&mut sum).map_err(train_error)?;
        Ok(f64::from(sum[0]))
    }

    fn update(
        &mut self,
        params: &Parameters,
        grads: Vec<Tensor>,
        lr: f64,
        max_norm: f64,
        loss: f64,
    ) -> herd_train::Result<f64> {
        let local = self.flatten(&grads)?;
        drop(grads);
        let mut grad = vec![0.0f32; self.part.len()];
        self.group
            .reduce_scatter_sum(&local, &mut grad)
            .map_err(train_error)?;
        drop(local);
        let mut square = [grad.iter().map(|g| f64::from(*g).powi(2)).sum::<f64>() as f32];
        self.group
            .all_reduce_sum(&mut square)
            .map_err(train_error)?;
        let norm = f64::from(square[0]).sqrt();
        if !(loss.is_finite() && norm.is_finite()) {
            return Ok(norm);
        }
        // clip_grad_norm's coefficient, AdamW::step's update, on this rank's part.
        let coefficient = max_norm / (norm + 1e-6);
        if coefficient < 1.0 {
            grad.iter_mut().for_each(|g| *g *= coefficient as f32);
        }
        self.steps += 1;
        let c = &self.config;
        let t = self.steps as i32;
        let (bias1, bias2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
        let (one_b1, one_b2) = ((1.0 - c.beta1) as f32, (1.0 - c.beta2) as f32);
        let (sqrt_bias2, eps) = (bias2.sqrt() as f32, c.eps as f32);
        let (step_size, shrink) = ((lr / bias1) as f32, (1.0 - lr * c.weight_decay) as f32);
        let values: Vec<Tensor> = params
            .vars()
            .iter()
            .map(|v| v.as_tensor().clone())
            .collect();
        let mut part = self.part_of(&values)?;
        for (j, p) in part.iter_mut().enumerate() {
            let g = grad[j];
            self.m[j] = self.m[j] * b1 + g * one_b1;
            self.v[j] = self.v[j] * b2 + g * g * one_b2;
            let denom = self.v[j].sqrt() / sqrt_bias2 + eps;
            if self.decays[j] {
                *p *= shrink;
            }
            *p -= self.m[j] / denom * step_size;
        }
        let whole = self.gather(&part)?;
        for (var, tensor) in params.vars().iter().zip(self.unflatten(&whole, params)?) {
            var.set(&tensor)?;
        }
        Ok(norm)
    }

    fn optimizer_state(&self, params: &Parameters) -> herd_train::Result<HashMap<String, Tensor>> {
        let mut state = HashMap::new();
        for (prefix, moment) in [("exp_avg", &self.m), ("exp_avg_sq", &self.v)] {
            let whole = self.gather(moment)?;
            for (name, tensor) in params.names().iter().zip(self.unflatten(&whole, params)?) {
                state.insert(format!("{prefix}.{name}"), tensor);
            }
        }
        Ok(state)
    }

    fn restore(
        &mut self,
        params: &Parameters,
        state: &HashMap<String, Tensor>,
        steps: u64,
    ) -> herd_train::Result<()> {
        for (prefix, slot) in [("exp_avg", 0), ("exp_avg_sq", 1)] {
            let tensors = params
                .names()
                .iter()
                .zip(params.vars())
                .map(|(name, var)| {
                    let key = format!("{prefix}.{name}");
                    let t = state.get(&key).ok_or_else(|| {
                        herd_train::Error::Checkpoint(format!("optimizer state has no {key}"))
                    })?;
                    if t.dims() != var.dims() {
                        return Err(herd_train::Error::Checkpoint(format!(
                            "optimizer tensor {key} is {:?}, the parameter is {:?}",
                            t.dims(),
                            var.dims()
                        )));
                    }
                    Ok(t.clone())
                })
                .collect::<herd_train::Result<Vec<_>>>()?;
            let part = self.part_of(&tensors)?;
            if slot == 0 {
                self.m = part;
            } else {
                self.v = part;
            }
        }
        self.steps = steps;
        Ok(())
    }

    fn writes_files(&self) -> bool {
        self.group.rank() == 0
    }

    fn barrier(&self) -> herd_train::Result<()> {
        self.group.barrier().map_err(train_error)
    }
}

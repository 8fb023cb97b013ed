//! Data parallelism with sharded optimizer state (ZeRO stage 2, FSDP's "shard grad and optimizer
//! state"; paper §3.3.1): each of the DP ranks computes an equal share of every batch's rows;
//! their gradients are summed in f32 by reduce-scatters that leave each rank the sum for its
//! 1/DP of every parameter; each rank clips by the global norm (one all-reduce) and applies AdamW
//! to its shards, holding AdamW's moments for them only; all-gathers then give every rank the
//! updated parameters.
//!
//! Each parameter is sharded on its own, as FSDP2 does: flattened and padded to a multiple of
//! DP, rank r holds its r-th slice. A step moves one parameter at a time, so besides the
//! weights, the gradients and the rank's shards (gradient, moments) it needs room for one
//! parameter only — memory per rank falls toward 8 bytes per parameter as DP grows, where one
//! process needs 16. In a checkpoint each rank writes its own slices
//! (`optimizer-RRRRR-of-NNNNN.safetensors`, herd-train's sharded layout), so nothing is gathered
//! to save; a run saved under DP resumes under any other DP degree or in one process.
//!
//! Under tensor parallelism too ([`crate::parts`]), each DP group shards the slices
//! its TP part holds. The global norm then adds the split parameters' squares over the TP
//! group (each part holds a different slice) and the whole ones' once (each part holds the
//! same). A checkpoint's moments are put back together whole, one parameter at a time, and each
//! of the TP × DP ranks writes its slice of the whole tensor — the files a DP run over as many
//! ranks writes — so the run resumes under any layout.
//!
//! Under pipeline parallelism ([`crate::stages`]) each stage's ranks shard its own parameters;
//! the global norm adds every stage's squares, and each rank's optimizer file, named by its rank
//! in the whole run, holds its slices of its stage's tensors.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use herd_model::split::{part_of, whole_of, Parts};
use herd_train::adamw::{update_values, AdamWConfig, StepConstants};
use herd_train::checkpoint;
use herd_train::params::Parameters;
use herd_train::pipeline::{values, Stages};
use herd_train::sharing::StepSharing;

use crate::collectives::Collectives;

/// One parameter's sharding: its length, and the length of each rank's slice of it padded to
/// a multiple of the group size.
#[derive(Debug, Clone, Copy)]
struct Shard {
    len: usize,
    per_rank: usize,
    decays: bool,
    /// The dimension tensor parallelism splits the parameter along, when it does.
    split_dim: Option<usize>,
}

/// One data-parallel rank's share of the step.
pub struct DataParallel<'g> {
    group: &'g dyn Collectives,
    config: AdamWConfig,
    shards: Vec<Shard>,
    /// AdamW's first and second moments of this rank's slice of each parameter.
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    steps: u64,
    /// The exchange between tensor-parallel parts, when the parameters are split.
    split: Option<Arc<dyn Parts>>,
    /// Consecutive ranks of the group that share each replica's rows (CP; 1 without).
    sequence_parts: usize,
    /// The pipeline this rank's stage belongs to, when the blocks are cut into stages.
    stages: Option<Arc<dyn Stages>>,
}

/// A collective's error as the trainer reports it.
pub(crate) fn train_error(e: impl std::fmt::Display) -> herd_train::Error {
    herd_train::Error::Sharing(format!("data parallelism: {e}"))
}

impl<'g> DataParallel<'g> {
    /// The share of rank `group.rank()` of `group` (the data-parallel group, or the CP × DP
    /// one: [`DataParallel::with_sequence_parts`]) for `params` (this TP part's slices when
    /// they are split).
    pub fn new(
        group: &'g dyn Collectives,
        params: &Parameters,
        config: AdamWConfig,
    ) -> herd_train::Result<DataParallel<'g>> {
        let size = group.size();
        let shards: Vec<Shard> = params
            .vars()
            .iter()
            .enumerate()
            .map(|(i, var)| Shard {
                len: var.elem_count(),
                per_rank: var.elem_count().div_ceil(size),
                decays: params.decays(i),
                split_dim: params.split_dim(i),
            })
            .collect();
        let zeros = || shards.iter().map(|s| vec![0.0; s.per_rank]).collect();
        Ok(DataParallel {
            group,
            config,
            m: zeros(),
            v: zeros(),
            shards,
            steps: 0,
            split: params.split().cloned(),
            sequence_parts: 1,
            stages: None,
        })
    }

    /// The same share where every `parts` consecutive ranks of the group are the context
    /// parallel parts of one replica (`parts` must divide the group's size).
    pub fn with_sequence_parts(mut self, parts: usize) -> herd_train::Result<Self> {
        if parts == 0 || !self.group.size().is_multiple_of(parts) {
            return Err(train_error(format!(
                "{parts} context parts do not divide a group of {}",
                self.group.size()
            )));
        }
        self.sequence_parts = parts;
        Ok(self)
    }

    /// The same share of one stage of `stages` (the group holds that stage's ranks).
    pub fn with_stages(mut self, stages: Arc<dyn Stages>) -> Self {
        self.stages = Some(stages);
        self
    }

    /// Sums `values` over every rank of the run: the DP group, then each TP group, then each
    /// pipeline.
    fn sum_over_all(&self, values: &mut [f32]) -> herd_train::Result<()> {
        self.group.all_reduce_sum(values).map_err(train_error)?;
        if let Some(split) = &self.split {
            split.sum(values)?;
        }
        if let Some(stages) = &self.stages {
            stages.sum(values)?;
        }
        Ok(())
    }

    /// This rank's number among the ranks that hold its stage's parameters (TP innermost) and
    /// their count: which slice of each whole tensor's moments it saves.
    fn slice_rank(&self) -> (usize, usize) {
        let (part, parts) = self
            .split
            .as_ref()
            .map_or((0, 1), |s| (s.part(), s.parts()));
        (self.group.rank() * parts + part, self.group.size() * parts)
    }

    /// This rank's number in the whole run, ordered [TP, CP, PP, DP] as the layout orders
    /// them, and the run's size: the name of its optimizer file.
    fn run_rank(&self) -> (usize, usize) {
        let (slice, slices) = self.slice_rank();
        let Some(stages) = &self.stages else {
            return (slice, slices);
        };
        let tp = slices / self.group.size();
        let (tp_part, group_rank) = (slice % tp, slice / tp);
        let (cp, dp) = (
            group_rank % self.sequence_parts,
            group_rank / self.sequence_parts,
        );
        let (pp, stage) = (stages.ranks(), stages.rank());
        let rank = ((dp * pp + stage) * self.sequence_parts + cp) * tp + tp_part;
        (rank, slices * pp)
    }

    /// This rank's slice of `tensor` (parameter `i`), padded with zeros.
    fn slice_of(&self, i: usize, tensor: &Tensor) -> herd_train::Result<Vec<f32>> {
        let shard = self.shards[i];
        let range = checkpoint::shard_range(shard.len, self.group.size(), self.group.rank());
        let mut slice = values(&tensor.flatten_all()?.narrow(0, range.start, range.len())?)?;
        slice.resize(shard.per_rank, 0.0);
        Ok(slice)
    }

    /// Every rank's `slice` of parameter `i` gathered into a tensor shaped as `like`.
    fn gather(&self, i: usize, slice: &[f32], like: &Tensor) -> herd_train::Result<Tensor> {
        let shard = self.shards[i];
        let mut whole = vec![0.0; shard.per_rank * self.group.size()];
        self.group
            .all_gather(slice, &mut whole)
            .map_err(train_error)?;
        whole.truncate(shard.len);
        Ok(Tensor::from_vec(whole, like.dims(), like.device())?.to_dtype(like.dtype())?)
    }
}

impl StepSharing for DataParallel<'_> {
    fn rows(&self, rows: usize) -> herd_train::Result<std::ops::Range<usize>> {
        let size = self.group.size() / self.sequence_parts;
        if !rows.is_multiple_of(size) {
            return Err(herd_train::Error::Data(format!(
                "a batch of {rows} rows does not split over {size} data-parallel ranks: make \
                 every stage's batch_rows a multiple of dp"
            )));
        }
        let per_rank = rows / size;
        let start = self.group.rank() / self.sequence_parts * per_rank;
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
        // Each gradient summed over the ranks into this rank's slice, one parameter at a time.
        let mut grad_slices = Vec::with_capacity(self.shards.len());
        let mut square = 0.0f64;
        for (grad, shard) in grads.into_iter().zip(&self.shards) {
            let mut local = values(&grad)?;
            drop(grad);
            local.resize(shard.per_rank * self.group.size(), 0.0);
            let mut slice = vec![0.0f32; shard.per_rank];
            self.group
                .reduce_scatter_sum(&local, &mut slice)
                .map_err(train_error)?;
            let squares = slice.iter().map(|g| f64::from(*g).powi(2)).sum::<f64>();
            // Every TP part holds the same whole parameter: its share counts once over them.
            square += match (&self.split, shard.split_dim) {
                (Some(split), None) => squares / split.parts() as f64,
                _ => squares,
            };
            grad_slices.push(slice);
        }
        let mut square = [square as f32];
        self.sum_over_all(&mut square)?;
        let norm = f64::from(square[0]).sqrt();
        if !(loss.is_finite() && norm.is_finite()) {
            return Ok(norm);
        }
        // clip_grad_norm's coefficient, AdamW::step's update, on this rank's slices.
        let coefficient = max_norm / (norm + 1e-6);
        let clip = coefficient.min(1.0) as f32;
        self.steps += 1;
        let constants = StepConstants::new(&self.config, self.steps, lr);
        for (i, (var, grad)) in params.vars().iter().zip(grad_slices).enumerate() {
            let mut slice = self.slice_of(i, var.as_tensor())?;
            let (m, v) = (&mut self.m[i], &mut self.v[i]);
            update_values(
                &constants,
                self.shards[i].decays,
                clip,
                &mut slice,
                &grad,
                m,
                v,
            );
            var.set(&self.gather(i, &slice, var.as_tensor())?)?;
        }
        Ok(norm)
    }

    fn save_optimizer(&self, params: &Parameters, dir: &Path) -> herd_train::Result<()> {
        let (rank, ranks) = self.slice_rank();
        let mut slices = HashMap::new();
        for (prefix, moments) in [("exp_avg", &self.m), ("exp_avg_sq", &self.v)] {
            for (i, (name, moment)) in params.names().iter().zip(moments).enumerate() {
                let tensor = match (&self.split, self.shards[i].split_dim) {
                    // The whole moment, one parameter at a time, and this rank's slice of it.
                    (Some(split), dim) => {
                        let local = self.gather(i, moment, params.vars()[i].as_tensor())?;
                        let whole = match dim {
                            Some(dim) => whole_of(split.as_ref(), &local, dim)?,
                            None => local,
                        };
                        let flat = whole.flatten_all()?;
                        let range = checkpoint::shard_range(flat.elem_count(), ranks, rank);
                        let mut slice = values(&flat.narrow(0, range.start, range.len())?)?;
                        slice.resize(flat.elem_count().div_ceil(ranks), 0.0);
                        Tensor::from_vec(slice, flat.elem_count().div_ceil(ranks), &Device::Cpu)?
                    }
                    (None, _) => Tensor::from_slice(moment, moment.len(), &Device::Cpu)?,
                };
                slices.insert(format!("{prefix}.{name}"), tensor);
            }
        }
        let (file, files) = self.run_rank();
        checkpoint::note_slices(&mut slices, ranks)?;
        let path = dir.join(checkpoint::optimizer_shard_name(file, files));
        candle_core::safetensors::save(&slices, &path)
            .map_err(|e| herd_train::Error::Checkpoint(format!("{}: {e}", path.display())))
    }

    fn restore(&mut self, params: &Parameters, dir: &Path, steps: u64) -> herd_train::Result<()> {
        // Saved by as many processes of a DP run: this rank reads its own file; otherwise the
        // whole state.
        let own_file = checkpoint::optimizer_shards(dir)?
            .filter(|_| self.split.is_none() && self.stages.is_none())
            .filter(|files| files.len() == self.group.size())
            .map(|files| files[self.group.rank()].clone());
        let state = match &own_file {
            Some(file) => candle_core::safetensors::load(file, &Device::Cpu)
                .map_err(|e| herd_train::Error::Checkpoint(format!("{}: {e}", file.display())))?,
            None => checkpoint::load_optimizer(dir, params)?,
        };
        for prefix in ["exp_avg", "exp_avg_sq"] {
            let mut slices = Vec::with_capacity(self.shards.len());
            for (i, name) in params.names().iter().enumerate() {
                let key = format!("{prefix}.{name}");
                let missing = || {
                    herd_train::Error::Checkpoint(format!(
                        "{}: the optimizer state has no {key}",
                        dir.display()
                    ))
                };
                let tensor = state.get(&key).ok_or_else(missing)?;
                let slice = match (&own_file, &self.split, self.shards[i].split_dim) {
                    (Some(_), _, _) => values(tensor)?,
                    (None, Some(split), Some(dim)) => {
                        self.slice_of(i, &part_of(tensor, dim, split.parts(), split.part())?)?
                    }
                    (None, _, _) => self.slice_of(i, tensor)?,
                };
                if slice.len() != self.shards[i].per_rank {
                    return Err(herd_train::Error::Checkpoint(format!(
                        "{}: {key} holds {} values for this process, not {}",
                        dir.display(),
                        slice.len(),
                        self.shards[i].per_rank
                    )));
                }
                slices.push(slice);
            }
            match prefix {
                "exp_avg" => self.m = slices,
                _ => self.v = slices,
            }
        }
        self.steps = steps;
        Ok(())
    }

    fn writes_files(&self) -> bool {
        self.run_rank().0 == 0
    }

    fn all_succeeded(&self, ok: bool) -> herd_train::Result<bool> {
        let mut failures = [f32::from(u8::from(!ok))];
        self.sum_over_all(&mut failures)?;
        Ok(failures[0] == 0.0)
    }
}

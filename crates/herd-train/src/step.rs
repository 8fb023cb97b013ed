//! One training step's arithmetic: the mean next-token loss of a batch and its gradient with
//! respect to every parameter, summed over micro-batches (gradient accumulation); clipping by
//! global norm; and the loss of a batch without gradients, for validation.

use std::sync::Arc;

use candle_core::Tensor;
use herd_model::split::Parts;
use herd_model::{context_columns, Llama, SequenceLayout};

use crate::error::{Error, Result};
use crate::loader::Batch;
use crate::loss::{nll_sum, split_token_nll};
use crate::params::Parameters;

/// Loss and gradients of one batch.
pub struct Gradients {
    /// Mean loss over the batch's targets.
    pub loss: f64,
    /// d loss / d parameter, in parameter order.
    pub grads: Vec<Tensor>,
    /// Targets that carried loss.
    pub n_targets: usize,
}

/// Input ids, target ids, target weights and the packed layout of `batch` on `device`.
pub fn tensors(batch: &Batch, model: &Llama) -> Result<(Tensor, Tensor, Tensor, SequenceLayout)> {
    let device = model.device();
    let shape = (batch.rows, batch.seq_len);
    let inputs = Tensor::from_slice(&batch.inputs, shape, device)?;
    let targets = Tensor::from_slice(&batch.targets, batch.targets.len(), device)?;
    let weights = Tensor::from_slice(&batch.weights, batch.weights.len(), device)?
        .to_dtype(herd_model::norm::accumulation_dtype(model.dtype()))?;
    let layout = SequenceLayout::packed(&batch.doc_lens).map_err(Error::Data)?;
    Ok((inputs, targets, weights, layout))
}

/// Sum of the target losses of `batch` as a scalar tensor (differentiable); of the whole
/// vocabulary when the model is split.
pub fn batch_nll_sum(model: &Llama, batch: &Batch) -> Result<Tensor> {
    part_nll_sum(model, batch, None)
}

/// [`batch_nll_sum`] of this process's part of every row when the rows are split among the
/// processes of `sequence` (context parallelism: [`context_columns`]); the parts' sums add up
/// to the whole batch's.
pub fn part_nll_sum(
    model: &Llama,
    batch: &Batch,
    sequence: Option<&Arc<dyn Parts>>,
) -> Result<Tensor> {
    let part = part_tensors(batch, model, sequence)?;
    let logits = model.forward(&part.inputs, &part.layout, None)?;
    logits_nll_sum(model, &logits, &part)
}

/// The tensors of this process's part of `batch`'s rows ([`tensors`], the columns of
/// `sequence`'s part when the rows are split).
pub struct PartTensors {
    /// Input ids `[rows, columns]`.
    pub inputs: Tensor,
    /// Target ids, flat.
    pub targets: Tensor,
    /// Target weights, flat.
    pub weights: Tensor,
    /// The part's layout.
    pub layout: SequenceLayout,
}

/// [`tensors`] of `batch`, of `sequence`'s part of every row when given.
pub fn part_tensors(
    batch: &Batch,
    model: &Llama,
    sequence: Option<&Arc<dyn Parts>>,
) -> Result<PartTensors> {
    let (mut inputs, mut targets, mut weights, mut layout) = tensors(batch, model)?;
    if let Some(parts) = sequence {
        let columns =
            context_columns(batch.seq_len, parts.parts(), parts.part()).map_err(Error::Data)?;
        let flat: Vec<u32> = (0..batch.rows)
            .flat_map(|r| columns.iter().map(move |&c| (r * batch.seq_len + c) as u32))
            .collect();
        let flat = Tensor::new(flat.as_slice(), model.device())?;
        inputs = inputs
            .flatten_all()?
            .index_select(&flat, 0)?
            .reshape((batch.rows, columns.len()))?;
        targets = targets.index_select(&flat, 0)?;
        weights = weights.index_select(&flat, 0)?;
        layout = layout.context_part(parts.clone()).map_err(Error::Data)?;
    }
    Ok(PartTensors {
        inputs,
        targets,
        weights,
        layout,
    })
}

/// The weighted sum of `part`'s target losses under `logits` (`[rows, columns, vocab]`, of the
/// model's slice of the vocabulary when it is split).
pub fn logits_nll_sum(model: &Llama, logits: &Tensor, part: &PartTensors) -> Result<Tensor> {
    let vocab = logits.dim(2)?;
    let logits = logits.reshape(((), vocab))?;
    match model.split() {
        None => nll_sum(&logits, &part.targets, &part.weights),
        Some(split) => {
            Ok(split_token_nll(&logits, &part.targets, &part.weights, split)?.sum_all()?)
        }
    }
}

/// `batch` in micro-batches of `micro_rows` rows (the last may be shorter).
pub fn micro_batches(batch: &Batch, micro_rows: usize) -> Vec<Batch> {
    let micro_rows = micro_rows.max(1);
    (0..batch.rows)
        .step_by(micro_rows)
        .map(|start| batch.slice(start, micro_rows.min(batch.rows - start)))
        .collect()
}

/// Mean loss of `batch` and its gradients, running `micro_rows` rows at a time.
pub fn loss_and_grads(
    model: &Llama,
    params: &Parameters,
    batch: &Batch,
    micro_rows: usize,
) -> Result<Gradients> {
    loss_and_grads_of_share(model, params, batch, micro_rows, batch.n_targets(), None)
}

/// `batch`'s share of the mean loss and gradients of a larger batch with `n_targets` targets
/// (its loss and gradients summed and divided by `n_targets`): what one data-parallel rank
/// computes, so that the sum over ranks is the whole batch's mean. With `sequence`, the share
/// is this process's part of each row ([`part_nll_sum`]).
pub fn loss_and_grads_of_share(
    model: &Llama,
    params: &Parameters,
    batch: &Batch,
    micro_rows: usize,
    n_targets: usize,
    sequence: Option<&Arc<dyn Parts>>,
) -> Result<Gradients> {
    let n_targets = n_targets.max(1);
    let mut grads: Option<Vec<Tensor>> = None;
    let mut loss = 0.0;
    for micro in micro_batches(batch, micro_rows) {
        let scaled = (part_nll_sum(model, &micro, sequence)? / n_targets as f64)?;
        loss += scaled
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
        accumulate(&mut grads, gradients(params, &scaled, Unused::Error)?)?;
    }
    Ok(Gradients {
        loss,
        grads: grads.unwrap_or_default(),
        n_targets: batch.n_targets(),
    })
}

/// What [`gradients`] does with a parameter the loss does not depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unused {
    /// It is a bug (every parameter of a language model reaches its loss).
    Error,
    /// Its gradient is zero (a reward model does not use the output layer).
    Zero,
}

/// d `loss` / d parameter, in parameter order.
pub fn gradients(params: &Parameters, loss: &Tensor, unused: Unused) -> Result<Vec<Tensor>> {
    let mut store = loss.backward()?;
    params
        .vars()
        .iter()
        .zip(params.names())
        .map(
            |(var, name)| match (store.remove(var.as_tensor()), unused) {
                (Some(g), _) => Ok(g.detach()),
                (None, Unused::Zero) => Ok(var.as_tensor().zeros_like()?),
                (None, Unused::Error) => Err(Error::Data(format!("no gradient reached {name}"))),
            },
        )
        .collect()
}

/// Adds `micro` (one micro-batch's gradients) into `total`.
pub fn accumulate(total: &mut Option<Vec<Tensor>>, micro: Vec<Tensor>) -> Result<()> {
    *total = Some(match total.take() {
        None => micro,
        Some(acc) => acc
            .iter()
            .zip(&micro)
            .map(|(a, g)| Ok((a + g)?))
            .collect::<Result<_>>()?,
    });
    Ok(())
}

/// The global L2 norm of `grads`; when above `max_norm` they are scaled down to it
/// (PyTorch's `clip_grad_norm_`). Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let mut sum = 0.0f64;
    for g in grads.iter() {
        sum += g
            .sqr()?
            .sum_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
    }
    let norm = sum.sqrt();
    let coefficient = max_norm / (norm + 1e-6);
    if coefficient < 1.0 {
        for g in grads.iter_mut() {
            *g = (&*g * coefficient)?;
        }
    }
    Ok(norm)
}

/// Mean loss of `batch` under `model` (built without gradient tracking); with `sequence`, every
/// part computes its tokens' and they add up the sums.
pub fn evaluate(
    model: &Llama,
    batch: &Batch,
    micro_rows: usize,
    sequence: Option<&Arc<dyn Parts>>,
) -> Result<f64> {
    let mut sum = 0.0;
    for micro in micro_batches(batch, micro_rows) {
        let nll = part_nll_sum(model, &micro, sequence)?;
        sum += nll.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
    }
    if let Some(parts) = sequence {
        let mut total = [sum as f32];
        parts.sum(&mut total)?;
        sum = f64::from(total[0]);
    }
    Ok(sum / batch.n_targets().max(1) as f64)
}

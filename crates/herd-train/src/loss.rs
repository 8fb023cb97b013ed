//! Next-token cross-entropy over packed rows: the sum of −log p(target) over the positions
//! that carry loss (a target in the same document as its input).
//!
//! On the CPU (f32/f64) it is one fused op: per row a log-sum-exp and the target's logit
//! forward, `(softmax − onehot) · weight · grad` backward — the vocabulary-wide rows are the
//! largest activations of a small model, and the composed version made six buffers of them.
//!
//! Logits split by vocabulary over the parts of a split model ([`herd_model::split`]; Megatron's
//! vocabulary-parallel cross-entropy) are never gathered: each part sends a log-sum-exp and the
//! target's logit per position, and computes the gradient of its own slice.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor, D};
use herd_model::for_real_dtype;
use herd_model::kernel::{slice, storage, Real};
use herd_model::split::Parts;
use num_traits::{Float, Zero};
use rayon::prelude::*;

use crate::error::Result;

/// Sum of −log softmax(logits)[target] over positions where `weights` is 1.
/// `logits` is `[n, vocab]`, `targets` `[n]` (u32; any valid id where the weight is 0),
/// `weights` `[n]` in the logits' dtype.
pub fn nll_sum(logits: &Tensor, targets: &Tensor, weights: &Tensor) -> Result<Tensor> {
    Ok(token_nll(logits, targets, weights)?.sum_all()?)
}

/// `weight · −log softmax(logits)[target]` per position (`[n]`): what [`nll_sum`] adds up,
/// for losses that sum per sequence (DPO's response log-probabilities).
pub fn token_nll(logits: &Tensor, targets: &Tensor, weights: &Tensor) -> Result<Tensor> {
    if logits.device().is_cpu() && matches!(logits.dtype(), DType::F32 | DType::F64) {
        return Ok(logits.contiguous()?.apply_op3(
            &targets.contiguous()?,
            &weights.contiguous()?,
            TokenNll(None),
        )?);
    }
    let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = log_probs.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    Ok((picked * weights)?.neg()?)
}

/// log Σ exp(row), stably.
fn log_sum_exp<T: Real>(row: &[T]) -> T {
    let max = row.iter().copied().fold(T::neg_infinity(), Float::max);
    let sum = row.iter().fold(T::zero(), |acc, &v| acc + (v - max).exp());
    max + sum.ln()
}

/// [`token_nll`] of `logits` (`[n, vocab / parts]`, f32) that are this part's slice of the
/// vocabulary of a model split by `split`: the same values on every part.
pub fn split_token_nll(
    logits: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
    split: &Arc<dyn Parts>,
) -> Result<Tensor> {
    if !logits.device().is_cpu() || logits.dtype() != DType::F32 {
        return Err(crate::Error::Data(
            "a split model's loss is computed in f32 on the CPU".into(),
        ));
    }
    Ok(logits.contiguous()?.apply_op3(
        &targets.contiguous()?,
        &weights.contiguous()?,
        TokenNll(Some(split.clone())),
    )?)
}

/// Each row's log-sum-exp over the whole vocabulary: over the row, or, when the vocabulary is
/// split, from every part's over its slice (sent as f32).
fn row_log_sum_exp<T: Real>(
    split: Option<&Arc<dyn Parts>>,
    logits: &[T],
    vocab: usize,
) -> candle_core::Result<Vec<T>> {
    let mine: Vec<T> = logits.par_chunks(vocab).map(log_sum_exp).collect();
    let Some(split) = split else {
        return Ok(mine);
    };
    let n = mine.len();
    let sent: Vec<f32> = mine.iter().map(|v| v.wide() as f32).collect();
    let mut all = vec![0.0f32; n * split.parts()];
    split.gather(&sent, &mut all)?;
    Ok((0..n)
        .map(|i| {
            let row: Vec<T> = (0..split.parts())
                .map(|p| T::narrow(f64::from(all[p * n + i])))
                .collect();
            log_sum_exp(&row)
        })
        .collect())
}

/// Where `target` falls in this part's slice of `vocab` ids (the whole row when not split).
fn local_target(split: Option<&Arc<dyn Parts>>, vocab: usize, target: u32) -> Option<usize> {
    let first = split.map_or(0, |s| s.part() * vocab);
    (target as usize).checked_sub(first).filter(|&t| t < vocab)
}

/// `weight · (logsumexp(row) − row[target])` per row; with a split vocabulary, over every
/// part's slice of the row.
struct TokenNll(Option<Arc<dyn Parts>>);

impl CustomOp3 for TokenNll {
    fn name(&self) -> &'static str {
        "herd-token-nll"
    }

    fn cpu_fwd(
        &self,
        ls: &CpuStorage,
        ll: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, vocab) = ll.shape().dims2()?;
        let split = self.0.as_ref();
        let targets = slice::<u32>(ts, tl)?;
        for_real_dtype!(ls, T => {
            let (logits, weights) = (slice::<T>(ls, ll)?, slice::<T>(ws, wl)?);
            let lse = row_log_sum_exp(split, logits, vocab)?;
            let mut picked: Vec<T> = logits
                .par_chunks(vocab)
                .zip(targets.par_iter())
                .map(|(row, &t)| local_target(split, vocab, t).map_or(T::zero(), |t| row[t]))
                .collect();
            if let Some(split) = split {
                let mut sent: Vec<f32> = picked.iter().map(|v| v.wide() as f32).collect();
                split.sum(&mut sent)?;
                picked = sent.into_iter().map(|v| T::narrow(f64::from(v))).collect();
            }
            let out: Vec<T> = (0..n)
                .map(|i| match weights[i] == T::zero() {
                    true => T::zero(),
                    false => weights[i] * (lse[i] - picked[i]),
                })
                .collect();
            Ok((storage(out), Shape::from(n)))
        })
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        weights: &Tensor,
        _nll: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let scale = (weights * grad)?;
        let backward = TokenNllBackward(self.0.clone());
        let d_logits = logits.apply_op3_no_bwd(targets, &scale, &backward)?;
        Ok((Some(d_logits), None, None))
    }
}

/// `(softmax(row) − onehot(target)) · scale` per row (this part's slice of it, the softmax over
/// the whole vocabulary, when split).
struct TokenNllBackward(Option<Arc<dyn Parts>>);

impl CustomOp3 for TokenNllBackward {
    fn name(&self) -> &'static str {
        "herd-token-nll-backward"
    }

    fn cpu_fwd(
        &self,
        ls: &CpuStorage,
        ll: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, vocab) = ll.shape().dims2()?;
        let split = self.0.as_ref();
        let targets = slice::<u32>(ts, tl)?;
        for_real_dtype!(ls, T => {
            let (logits, scales) = (slice::<T>(ls, ll)?, slice::<T>(ss, sl)?);
            let lse = row_log_sum_exp(split, logits, vocab)?;
            let mut out = vec![T::zero(); logits.len()];
            out.par_chunks_mut(vocab)
                .zip(logits.par_chunks(vocab))
                .enumerate()
                .for_each(|(i, (o, row))| {
                    let scale = scales[i];
                    if scale == T::zero() {
                        return;
                    }
                    for (o, &v) in o.iter_mut().zip(row) {
                        *o = (v - lse[i]).exp() * scale;
                    }
                    if let Some(t) = local_target(split, vocab, targets[i]) {
                        o[t] -= scale;
                    }
                });
            Ok((storage(out), ll.shape().clone()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Loss and gradient against the composed log-softmax + gather, in f64.
    #[test]
    fn fused_loss_matches_the_composed_one() {
        let dev = Device::Cpu;
        let logits = Var::from_tensor(&Tensor::randn(0f64, 3.0, (7, 50), &dev).unwrap()).unwrap();
        let targets = Tensor::from_vec(vec![3u32, 0, 49, 7, 7, 1, 20], 7, &dev).unwrap();
        let weights = Tensor::from_vec(vec![1f64, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0], 7, &dev).unwrap();
        let fused = nll_sum(&logits, &targets, &weights).unwrap();
        let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
        let picked = log_probs
            .gather(&targets.unsqueeze(1).unwrap(), 1)
            .unwrap()
            .squeeze(1)
            .unwrap();
        let composed = (picked * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .neg()
            .unwrap();
        let (a, b): (f64, f64) = (fused.to_scalar().unwrap(), composed.to_scalar().unwrap());
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        let ga = (fused * 1.5).unwrap().backward().unwrap();
        let gb = (composed * 1.5).unwrap().backward().unwrap();
        let d = (ga.get(&logits).unwrap() - gb.get(&logits).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(d < 1e-12, "{d}");
    }
}

//! Next-token cross-entropy over packed rows: the sum of −log p(target) over the positions
//! that carry loss (a target in the same document as its input).

use candle_core::{Tensor, D};

use crate::error::Result;

/// Sum of −log softmax(logits)[target] over positions where `weights` is 1.
/// `logits` is `[n, vocab]`, `targets` `[n]` (u32; any valid id where the weight is 0),
/// `weights` `[n]` in the logits' dtype.
pub fn nll_sum(logits: &Tensor, targets: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = log_probs.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    Ok((picked * weights)?.sum_all()?.neg()?)
}

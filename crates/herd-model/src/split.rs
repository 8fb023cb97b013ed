//! Layers split into parts that compute side by side (Megatron-LM's tensor parallelism, paper
//! §3.3.1), as the model sees them: each part holds a slice of every projection and of the
//! vocabulary, and two hand-offs complete what one part cannot compute alone.
//!
//! - **Column-split** layers (Q, K, V, gate, up and the output layer) hold a slice of their
//!   output features: whole query and KV heads (GQA groups stay together), a slice of the FFN's
//!   hidden units, a slice of the vocabulary. Their input is whole on every part; its gradient
//!   is a partial sum, completed by [`enter`] (identity forward, sum over parts backward).
//! - **Row-split** layers (the attention output and FFN down projections) hold a slice of their
//!   input features; their outputs are partial sums, completed by [`exit`] (sum over parts
//!   forward, identity backward).
//! - The **embedding** is split by vocabulary: a part looks up the ids it holds, zeros for the
//!   others, and [`exit`] sums the parts' rows.
//! - RMSNorm scales are whole on every part.
//!
//! A sequence may be split too (context parallelism): each part holds some of every row's
//! tokens ([`crate::SequenceLayout::context_part`]) and attends over every part's keys and
//! values, which [`gather_sequence`] brings together (an all-gather forward, a reduce-scatter of
//! their gradients backward).
//!
//! How parts exchange values is [`Parts`], implemented outside the model (herd-parallel,
//! over MPI): the model never learns who holds the other parts.

use std::fmt::Debug;
use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

use crate::kernel::{slice, storage};

/// The exchange between the parts of split layers or of a split sequence. Every part calls the
/// same methods in the same order with buffers of the same lengths.
pub trait Parts: Debug + Send + Sync {
    /// How many parts each split layer or sequence is cut into.
    fn parts(&self) -> usize;

    /// Which part this model holds, `0..parts()`.
    fn part(&self) -> usize;

    /// Replaces `buf` by its element-wise sum over the parts.
    fn sum(&self, buf: &mut [f32]) -> Result<()>;

    /// Concatenates every part's `mine` in part order into `out` (`parts()` × `mine.len()`).
    fn gather(&self, mine: &[f32], out: &mut [f32]) -> Result<()>;

    /// Sums `whole` (`parts()` equal pieces) over the parts and gives this part its piece of
    /// the sum in `mine`.
    fn reduce_scatter(&self, whole: &[f32], mine: &mut [f32]) -> Result<()>;
}

/// The split of one parameter (by its HF name): the dimension cut into parts, or `None` for
/// a tensor every part holds whole (the RMSNorm scales, and any tensor that is not the
/// Llama's). Matrices are stored `[out, in]`.
pub fn split_dim(name: &str) -> Option<usize> {
    const BY_OUTPUT: [&str; 7] = [
        "model.embed_tokens.weight",
        "lm_head.weight",
        "self_attn.q_proj.weight",
        "self_attn.k_proj.weight",
        "self_attn.v_proj.weight",
        "mlp.gate_proj.weight",
        "mlp.up_proj.weight",
    ];
    const BY_INPUT: [&str; 2] = ["self_attn.o_proj.weight", "mlp.down_proj.weight"];
    let is = |suffixes: &[&str]| suffixes.iter().any(|s| name.ends_with(s));
    if is(&BY_OUTPUT) {
        Some(0)
    } else if is(&BY_INPUT) {
        Some(1)
    } else {
        None
    }
}

/// Checks that `config`'s heads (query and KV), FFN units and vocabulary split into `parts`
/// equal parts, as a model split into them needs; the error is the first setting that does not
/// and its value.
pub fn check_parts(
    config: &crate::LlamaConfig,
    parts: usize,
) -> std::result::Result<(), (&'static str, usize)> {
    [
        ("n_heads", config.n_heads),
        ("n_kv_heads", config.n_kv_heads),
        ("ffn_dim", config.ffn_dim),
        ("vocab_size", config.vocab_size),
    ]
    .into_iter()
    .find(|(_, value)| !value.is_multiple_of(parts))
    .map_or(Ok(()), Err)
}

/// Part `part` of `parts` of `tensor` cut along `dim` (which `parts` must divide).
pub fn part_of(tensor: &Tensor, dim: usize, parts: usize, part: usize) -> Result<Tensor> {
    let len = tensor.dim(dim)?;
    if !len.is_multiple_of(parts) {
        candle_core::bail!("dimension {dim} of {len} does not split into {parts} equal parts");
    }
    let each = len / parts;
    tensor.narrow(dim, part * each, each)?.contiguous()
}

/// The whole tensor from every part's `local` slice along `dim` (a collective: every part
/// calls it).
pub fn whole_of(split: &dyn Parts, local: &Tensor, dim: usize) -> Result<Tensor> {
    let parts = split.parts();
    let mine = local
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?;
    let mut all = vec![0.0f32; mine.len() * parts];
    split.gather(&mine, &mut all)?;
    let pieces = (0..parts)
        .map(|p| {
            let piece = &all[p * mine.len()..(p + 1) * mine.len()];
            Tensor::from_slice(piece, local.dims(), local.device())
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&pieces, dim)?.to_dtype(local.dtype())
}

/// The entry of column-split layers: `x` unchanged forward; backward, its gradient summed over
/// the parts (each part's slice of the layers contributes a share of it).
pub fn enter(split: Option<&Arc<dyn Parts>>, x: &Tensor) -> Result<Tensor> {
    match split {
        None => Ok(x.clone()),
        Some(split) => x.contiguous()?.apply_op1(Hand {
            split: split.clone(),
            sums_forward: false,
        }),
    }
}

/// The exit of row-split layers (and of the split embedding): `x`, a partial sum, summed over
/// the parts forward; the gradient passes unchanged backward.
pub fn exit(split: Option<&Arc<dyn Parts>>, x: &Tensor) -> Result<Tensor> {
    match split {
        None => Ok(x.clone()),
        Some(split) => x.contiguous()?.apply_op1(Hand {
            split: split.clone(),
            sums_forward: true,
        }),
    }
}

/// One hand-off between parts: a sum over the parts in one direction, the identity in the
/// other (Megatron's `f` and `g`).
struct Hand {
    split: Arc<dyn Parts>,
    sums_forward: bool,
}

impl CustomOp1 for Hand {
    fn name(&self) -> &'static str {
        if self.sums_forward {
            "herd-split-exit"
        } else {
            "herd-split-enter"
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        if !self.sums_forward {
            let values = match s {
                CpuStorage::F32(_) => storage(slice::<f32>(s, l)?.to_vec()),
                CpuStorage::F64(_) => storage(slice::<f64>(s, l)?.to_vec()),
                _ => candle_core::bail!("split layers compute in f32 or f64"),
            };
            return Ok((values, l.shape().clone()));
        }
        let mut values: Vec<f32> = match s {
            CpuStorage::F32(_) => slice::<f32>(s, l)?.to_vec(),
            _ => candle_core::bail!("the parts of split layers exchange f32 values"),
        };
        self.split.sum(&mut values)?;
        Ok((storage(values), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // Each direction's sum is the other hand-off's forward.
        Ok(Some(match self.sums_forward {
            true => grad.clone(),
            false => grad.contiguous()?.apply_op1_no_bwd(&Hand {
                split: self.split.clone(),
                sums_forward: true,
            })?,
        }))
    }
}

/// Keys or values `[batch, heads, tokens, head_dim]` of this part's tokens, gathered from every
/// part in part order along the tokens: `[batch, heads, parts · tokens, head_dim]`. Backward,
/// each part receives the sum of every part's gradient for its own tokens.
pub fn gather_sequence(parts: &Arc<dyn Parts>, x: &Tensor) -> Result<Tensor> {
    let (b, h, t, d) = x.dims4()?;
    let n = parts.parts();
    x.contiguous()?
        .flatten_all()?
        .apply_op1(GatherSequence(parts.clone()))?
        .reshape((n, b, h, t, d))?
        .permute((1, 2, 0, 3, 4))?
        .reshape((b, h, n * t, d))
}

/// The all-gather of [`gather_sequence`] on flat values, with its reduce-scatter backward.
struct GatherSequence(Arc<dyn Parts>);

impl CustomOp1 for GatherSequence {
    fn name(&self) -> &'static str {
        "herd-gather-sequence"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let mine = match s {
            CpuStorage::F32(_) => slice::<f32>(s, l)?,
            _ => candle_core::bail!("the parts of a split sequence exchange f32 values"),
        };
        let mut all = vec![0.0f32; mine.len() * self.0.parts()];
        self.0.gather(mine, &mut all)?;
        let len = all.len();
        Ok((storage(all), Shape::from(len)))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let whole = grad.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let mut mine = vec![0.0f32; x.elem_count()];
        self.0.reduce_scatter(&whole, &mut mine)?;
        Ok(Some(Tensor::from_vec(mine, x.shape(), x.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projections_split_by_their_features_and_norms_stay_whole() {
        assert_eq!(split_dim("model.layers.3.self_attn.q_proj.weight"), Some(0));
        assert_eq!(split_dim("model.layers.3.self_attn.o_proj.weight"), Some(1));
        assert_eq!(split_dim("model.layers.0.mlp.down_proj.weight"), Some(1));
        assert_eq!(split_dim("model.layers.0.mlp.up_proj.weight"), Some(0));
        assert_eq!(split_dim("model.embed_tokens.weight"), Some(0));
        assert_eq!(split_dim("lm_head.weight"), Some(0));
        assert_eq!(split_dim("model.norm.weight"), None);
        assert_eq!(split_dim("model.layers.1.input_layernorm.weight"), None);
        assert_eq!(split_dim("score.weight"), None);
    }

    #[test]
    fn parts_of_a_matrix_are_its_slices() {
        let dev = candle_core::Device::Cpu;
        let m = Tensor::arange(0f32, 12.0, &dev)
            .unwrap()
            .reshape((3, 4))
            .unwrap();
        let right = part_of(&m, 1, 2, 1).unwrap();
        assert_eq!(
            right.to_vec2::<f32>().unwrap(),
            [[2.0, 3.0], [6.0, 7.0], [10.0, 11.0]]
        );
        let err = part_of(&m, 0, 2, 0).unwrap_err().to_string();
        assert!(err.contains("3 does not split into 2"), "{err}");
    }
}

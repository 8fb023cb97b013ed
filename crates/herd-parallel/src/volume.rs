//! What one rank holds and sends per optimizer step under a [`Layout`]: the formula behind
//! `herd pretrain --plan` and docs/PARALLEL.md's tables for the paper's 8B and 405B runs, and
//! the one herd's measured data-parallel traffic is checked against (Open MPI's monitoring).
//!
//! Each collective is counted as its bandwidth-optimal (ring) algorithm sends it, per rank:
//! an all-reduce of S bytes over g ranks sends 2(g−1)/g·S, a reduce-scatter or an all-gather of
//! S bytes (the whole) (g−1)/g·S, a point-to-point message S. Per dimension, the plans:
//! - **DP** (ZeRO-2, paper §3.3.2): the gradients of the rank's parameters reduce-scattered in
//!   f32 and the updated parameters all-gathered over the CP × DP ranks that hold them, each
//!   tensor padded to a multiple of CP·DP as herd's `DataParallel` shards it, and two scalars
//!   all-reduced (loss, norm);
//! - **TP** (Megatron, no sequence parallelism): per layer and micro-batch, two all-reduces of
//!   the activations forward (attention and FFN outputs) and two backward (their inputs'
//!   gradients); the vocabulary-parallel embedding's all-reduce on the first stage; on the last
//!   the output layer's input gradient, and the cross-entropy's per-token values: each part's
//!   log-sum-exp all-gathered forward and again backward, the target's logit all-reduced; and
//!   once per step the gradient norm's square (herd's `parts` and `DataParallel`);
//! - **PP** (1F1B): per micro-batch the activations to the next stage and their gradients to the
//!   previous one;
//! - **CP** (paper §3.3.2, all-gather, not a ring): per layer and micro-batch the keys and values
//!   all-gathered forward and their gradients reduce-scattered backward.
//!
//! The busiest rank of each dimension is counted (a middle pipeline stage sends both ways, the
//! first stage holds the embedding).

use herd_model::LlamaConfig;

use crate::error::{Error, Result};
use crate::layout::{Dim, Layout};

/// The rows a step trains on and how they are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepShape {
    /// Rows (sequences) of the whole step, over every DP rank.
    pub rows: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// Rows per micro-batch (per forward and backward pass) of one DP rank.
    pub micro_batch_rows: usize,
}

/// Bytes per value of what moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Precision {
    /// Activations and their gradients (TP, CP, PP).
    pub activation: u64,
    /// Gradients as DP reduces them.
    pub gradient: u64,
    /// Parameters as DP gathers them.
    pub parameter: u64,
}

impl Precision {
    /// herd on the CPU: f32 everywhere.
    pub const F32: Precision = Precision {
        activation: 4,
        gradient: 4,
        parameter: 4,
    };

    /// The paper's BF16 training: bf16 activations and parameters, gradients reduced in f32
    /// (§3.3.4).
    pub const BF16: Precision = Precision {
        activation: 2,
        gradient: 4,
        parameter: 2,
    };
}

/// Bytes one rank sends per optimizer step, by dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StepVolume {
    /// Within its tensor-parallel group.
    pub tp: u64,
    /// Within its context-parallel group.
    pub cp: u64,
    /// To the neighbouring pipeline stages.
    pub pp: u64,
    /// Within its data-parallel group.
    pub dp: u64,
}

impl StepVolume {
    /// The four together.
    pub fn total(&self) -> u64 {
        self.tp + self.cp + self.pp + self.dp
    }
}

/// What one rank holds: the parameters of its stage and tensor shard, and its memory for
/// herd's state (f32 weights and gradients whole; the reduced gradient and AdamW's two moments
/// for its 1/(CP·DP) of each tensor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankShare {
    /// Parameters of the rank's largest share (the busiest stage, 1/TP of its matrices).
    pub parameters: u64,
    /// Bytes of weights, gradients and optimizer state.
    pub state_bytes: u64,
}

/// Blocks of each pipeline stage, as the trainer cuts them ([`herd_model::stage::stage_sizes`]:
/// the first and last stages carry one block fewer, as the paper balances them).
pub fn stage_layers(n_layers: usize, pp: usize) -> Result<Vec<usize>> {
    herd_model::stage::stage_sizes(n_layers, pp).map_err(Error::Layout)
}

/// The sizes of the tensors one tensor-parallel rank of pipeline stage `stage` holds: each
/// layer's seven matrices and the embedding and output split TP ways, the norms whole.
fn stage_tensors(c: &LlamaConfig, stages: &[usize], stage: usize, tp: u64) -> Vec<u64> {
    let (dim, ffn) = (c.dim as u64, c.ffn_dim as u64);
    let (q, kv) = (
        (c.n_heads * c.head_dim) as u64,
        (c.n_kv_heads * c.head_dim) as u64,
    );
    let split = |n: u64| n.div_ceil(tp);
    let layer = [
        split(dim * q),
        split(dim * kv),
        split(dim * kv),
        split(q * dim),
        split(dim * ffn),
        split(ffn * dim),
        split(dim * ffn),
        dim,
        dim,
    ];
    let mut tensors = Vec::new();
    if stage == 0 {
        tensors.push(split(c.vocab_size as u64 * dim));
    }
    for _ in 0..stages[stage] {
        tensors.extend(layer);
    }
    if stage == stages.len() - 1 {
        tensors.push(dim);
        // A tied output matrix is the embedding's, unless another stage holds that.
        if !c.tie_embeddings || stages.len() > 1 {
            tensors.push(split(c.vocab_size as u64 * dim));
        }
    }
    tensors
}

/// The pipeline stages (of `pp × virtual_stages`) each PP rank of `layout` holds, rank by
/// rank: rank r holds stages r, r + pp, …
fn stages_of_ranks(layout: &Layout) -> Vec<Vec<usize>> {
    let (pp, v) = (layout.degree(Dim::Pipeline), layout.virtual_stages());
    (0..pp)
        .map(|rank| (0..v).map(|chunk| chunk * pp + rank).collect())
        .collect()
}

/// The tensors of the rank of `layout` that holds the most parameters.
fn busiest_rank_tensors(c: &LlamaConfig, layout: &Layout) -> Result<Vec<u64>> {
    let pp = layout.degree(Dim::Pipeline) * layout.virtual_stages();
    let stages = stage_layers(c.n_layers, pp)?;
    let tp = layout.degree(Dim::Tensor) as u64;
    Ok(stages_of_ranks(layout)
        .into_iter()
        .map(|held| {
            held.into_iter()
                .flat_map(|s| stage_tensors(c, &stages, s, tp))
                .collect::<Vec<u64>>()
        })
        .max_by_key(|tensors| tensors.iter().sum::<u64>())
        .expect("at least one stage"))
}

/// The share of the rank of `layout` that holds the most parameters.
pub fn rank_share(c: &LlamaConfig, layout: &Layout) -> Result<RankShare> {
    // The optimizer state is sharded over the CP × DP ranks.
    let group = (layout.degree(Dim::Context) * layout.degree(Dim::Data)) as u64;
    let tensors = busiest_rank_tensors(c, layout)?;
    let parameters = tensors.iter().sum();
    let shards: u64 = tensors.iter().map(|n| n.div_ceil(group)).sum();
    // One process keeps AdamW's moments beside the gradients; sharded ranks add their reduced
    // slice.
    let state_bytes = match group {
        1 => 16 * parameters,
        _ => 8 * parameters + 12 * shards,
    };
    Ok(RankShare {
        parameters,
        state_bytes,
    })
}

/// Bytes the busiest rank of each dimension sends in one step of `step` under `layout`.
pub fn step_volume(
    c: &LlamaConfig,
    layout: &Layout,
    step: &StepShape,
    precision: &Precision,
) -> Result<StepVolume> {
    let degree = |d: Dim| layout.degree(d) as u64;
    let (tp, cp, pp, dp) = (
        degree(Dim::Tensor),
        degree(Dim::Context),
        degree(Dim::Pipeline),
        degree(Dim::Data),
    );
    let per_dp = step.rows as u64 / dp;
    if step.micro_batch_rows == 0
        || !step.rows.is_multiple_of(dp as usize)
        || !per_dp.is_multiple_of(step.micro_batch_rows as u64)
    {
        return Err(Error::Layout(format!(
            "{} rows do not split into dp = {dp} replicas of micro-batches of {} rows",
            step.rows, step.micro_batch_rows
        )));
    }
    if !step.seq_len.is_multiple_of(2 * cp as usize) {
        return Err(Error::Layout(format!(
            "seq_len {} does not split into 2 × cp = {} chunks",
            step.seq_len,
            2 * cp
        )));
    }
    let micro_batches = per_dp / step.micro_batch_rows as u64;
    // Tokens of one rank's micro-batch.
    let tokens = (step.micro_batch_rows * step.seq_len) as u64 / cp;
    let (dim, a) = (c.dim as u64, precision.activation);
    let activation = tokens * dim * a;
    let all_reduce = |bytes: u64, g: u64| 2 * (g - 1) * bytes / g;
    // `bytes` of this rank's among g: it sends them to each other rank (as a ring passes them).
    let all_gather = |bytes: u64, g: u64| (g - 1) * bytes;
    let stages = stage_layers(c.n_layers, pp as usize * layout.virtual_stages())?;
    let last = stages.len() - 1;
    let ranks = stages_of_ranks(layout);
    // The largest over the PP ranks of `per_stage` summed over each rank's stages.
    let busiest = |per_stage: &dyn Fn(usize) -> u64| -> u64 {
        ranks
            .iter()
            .map(|held| held.iter().map(|&s| per_stage(s)).sum())
            .max()
            .expect("a rank")
    };

    let tp_volume = {
        let per_layer = 4 * all_reduce(activation, tp);
        let cross_entropy = 2 * all_gather(tokens * 4, tp) + all_reduce(tokens * 4, tp);
        let per_stage = |s: usize| {
            let embedding = if s == 0 {
                all_reduce(activation, tp)
            } else {
                0
            };
            let output = match s == last {
                true => all_reduce(activation, tp) + cross_entropy,
                false => 0,
            };
            stages[s] as u64 * per_layer + embedding + output
        };
        micro_batches * busiest(&per_stage) + all_reduce(4, tp)
    };
    let cp_volume = {
        let kv_heads = (c.n_kv_heads as u64).div_ceil(tp);
        let chunk = tokens * kv_heads * c.head_dim as u64 * 2 * a;
        let most_layers = busiest(&|s| stages[s] as u64);
        micro_batches * most_layers * 2 * (cp - 1) * chunk
    };
    // Each micro-batch's hidden states out of every stage but the last, their gradients out of
    // every stage but the first; the loss and the gradients' squared norm summed over the PP
    // ranks.
    let pp_volume = match pp {
        1 => 0,
        _ => {
            let messages = busiest(&|s| u64::from(s != last) + u64::from(s != 0));
            micro_batches * messages * activation + 2 * all_reduce(4, pp)
        }
    };
    let dp_volume = {
        // Each tensor is sharded on its own over the CP × DP ranks, padded to a multiple of
        // their number.
        let group = cp * dp;
        let shards: u64 = busiest_rank_tensors(c, layout)?
            .iter()
            .map(|n| n.div_ceil(group))
            .sum();
        (group - 1) * shards * (precision.gradient + precision.parameter) + 2 * all_reduce(4, group)
    };
    Ok(StepVolume {
        tp: tp_volume,
        cp: cp_volume,
        pp: pp_volume,
        dp: dp_volume,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_stages_carry_one_layer_fewer() {
        // The paper's 405B: 126 layers over 16 stages, 7 at each end and 8 in between.
        let stages = stage_layers(126, 16).unwrap();
        assert_eq!(stages[0], 7);
        assert_eq!(stages[15], 7);
        assert!(stages[1..15].iter().all(|&l| l == 8));
        assert_eq!(stages.iter().sum::<usize>(), 126);
        assert_eq!(stage_layers(32, 1).unwrap(), vec![32]);
        assert_eq!(stage_layers(2, 2).unwrap(), vec![1, 1]);
        let odd = stage_layers(5, 3).unwrap();
        assert_eq!(odd.iter().sum::<usize>(), 5);
        assert_eq!(odd, vec![1, 3, 1]);
        assert!(stage_layers(1, 2).is_err());
    }

    #[test]
    fn one_rank_holds_every_parameter_and_sends_nothing() {
        for name in ["llama3.1-8b", "llama3.2-1b"] {
            let c = LlamaConfig::preset(name).unwrap();
            let layout = Layout::new(1, 1, 1, 1, 1).unwrap();
            let share = rank_share(&c, &layout).unwrap();
            assert_eq!(share.parameters, c.num_parameters() as u64, "{name}");
            assert_eq!(share.state_bytes, 16 * c.num_parameters() as u64);
            let step = StepShape {
                rows: 8,
                seq_len: 64,
                micro_batch_rows: 2,
            };
            let v = step_volume(&c, &layout, &step, &Precision::F32).unwrap();
            assert_eq!(v, StepVolume::default());
        }
    }

    #[test]
    fn each_dimension_by_hand() {
        let c = LlamaConfig::preset("llama3.1-8b").unwrap();
        let step = StepShape {
            rows: 16,
            seq_len: 8192,
            micro_batch_rows: 1,
        };
        let bf16 = Precision::BF16;
        // DP 4: 3/4 of the parameters out as f32 gradients and again as bf16 parameters.
        let dp = step_volume(&c, &Layout::new(1, 1, 1, 4, 4).unwrap(), &step, &bf16).unwrap();
        // Every tensor of 8B has a multiple of 4 values.
        let p = c.num_parameters() as u64;
        assert_eq!(dp.dp, 3 * (p / 4) * 6 + 2 * (2 * 3 * 4 / 4));
        assert_eq!((dp.tp, dp.cp, dp.pp), (0, 0, 0));
        // PP 4: a middle stage sends each of its 16 micro-batches' activations both ways, and
        // takes part in the sums of the loss and the squared norm.
        let pp = step_volume(&c, &Layout::new(1, 1, 4, 1, 4).unwrap(), &step, &bf16).unwrap();
        assert_eq!(pp.pp, 16 * 2 * 8192 * 4096 * 2 + 2 * (2 * 3 * 4 / 4));
        // Interleaved, 2 stages per rank: each micro-batch crosses every rank twice each way.
        let layout = Layout::new(1, 1, 4, 1, 4)
            .unwrap()
            .with_virtual_stages(2)
            .unwrap();
        let interleaved = step_volume(&c, &layout, &step, &bf16).unwrap();
        assert_eq!(
            interleaved.pp,
            16 * 4 * 8192 * 4096 * 2 + 2 * (2 * 3 * 4 / 4)
        );
        // A rank then holds 2 of the 8 stages: 32 + 2 layers over 8, two stages of 4 layers.
        let share = rank_share(&c, &layout).unwrap();
        let per_layer = rank_share(&c, &Layout::new(1, 1, 1, 1, 1).unwrap()).unwrap();
        assert!(share.parameters < per_layer.parameters / 3, "{share:?}");
        // CP 2: per layer, 1 peer's chunk of K and V (8 heads of 128) out forward and backward.
        let cp = step_volume(&c, &Layout::new(1, 2, 1, 1, 2).unwrap(), &step, &bf16).unwrap();
        assert_eq!(cp.cp, 16 * 32 * 2 * 4096 * 8 * 128 * 2 * 2);
        // TP 2: 4 all-reduces per layer sending half of 2·(activation) each, plus the ends
        // (the loss's 3 f32 values per token), plus the norm.
        let tp = step_volume(&c, &Layout::new(2, 1, 1, 1, 2).unwrap(), &step, &bf16).unwrap();
        let activation = 8192 * 4096 * 2;
        assert_eq!(
            tp.tp,
            16 * (32 * 4 * activation + 2 * activation + 3 * 8192 * 4) + 4
        );
    }

    #[test]
    fn the_busiest_rank_of_405b_is_a_middle_stage() {
        let c = LlamaConfig::preset("llama3.1-405b").unwrap();
        let layout = Layout::new(8, 1, 16, 128, 16384).unwrap();
        let share = rank_share(&c, &layout).unwrap();
        // 8 layers (the end stages have 7 and the embedding or output, which weigh less),
        // each matrix split 8 ways, the two norms whole.
        let matrices: u64 = 16384 * 16384 * 2 + 2 * 16384 * 1024 + 3 * 16384 * 53248;
        let layer = matrices / 8 + 2 * 16384;
        assert_eq!(share.parameters, 8 * layer);
        // f32 weights and gradients, then 12 bytes per value of its 1/128 of each tensor.
        let shards = 8 * (matrices / 8 / 128 + 2 * 16384 / 128);
        assert_eq!(share.state_bytes, 8 * share.parameters + 12 * shards);
    }

    #[test]
    fn bad_shapes_are_refused() {
        let c = LlamaConfig::preset("llama3.2-1b").unwrap();
        let layout = Layout::new(1, 2, 1, 2, 4).unwrap();
        let step = |rows, seq_len| StepShape {
            rows,
            seq_len,
            micro_batch_rows: 2,
        };
        assert!(step_volume(&c, &layout, &step(6, 64), &Precision::F32).is_err());
        assert!(step_volume(&c, &layout, &step(8, 66), &Precision::F32).is_err());
        assert!(step_volume(&c, &layout, &step(8, 64), &Precision::F32).is_ok());
    }
}

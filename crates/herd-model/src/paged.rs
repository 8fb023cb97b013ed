//! The paged key/value cache of inference (vLLM's PagedAttention layout, on the CPU): every
//! layer's keys and values live in one pool of fixed-size blocks of [`BLOCK_TOKENS`] positions,
//! and a sequence names its blocks in a block table, so sequences can share the blocks of a
//! common prefix and a block is copied only when a sharer writes into it. Which blocks a
//! sequence holds is the caller's business (the serving engine's block manager, or one
//! [`crate::Llama`] session's own table); this module stores them and attends over them.
//!
//! Attention over the blocks is herd's own kernel, not candle ops: gathering each sequence's
//! blocks into contiguous tensors every step would cost more than the paging saves, and a
//! candle op per sequence and layer is a dozen allocations and pool wake-ups per token. One
//! query row at a time, it takes the scaled dot products with every key up to its own position,
//! a softmax in f32 and the weighted sum of the values, always in the same order: a row's
//! result depends on its sequence's keys alone, never on the chunking of its prompt or on the
//! other sequences of the step (the serving engine's determinism rests on this). Keys and
//! values are stored in f32 whatever the model's dtype.

use std::cell::RefCell;

use candle_core::Result;

use crate::config::LlamaConfig;
use crate::kernel::par_for_each;

/// Positions per block (vLLM's default).
pub const BLOCK_TOKENS: usize = 16;

/// Attention work (query rows × keys × head dim) below which a layer's attention runs on the
/// calling thread: waking the worker pool costs more than a few short rows.
const PARALLEL_MIN_WORK: usize = 1 << 17;

/// The block pool: `[block, kv_head, slot, head_dim]` keys and values per layer.
#[derive(Debug, Clone)]
pub struct PagedKv {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    blocks: usize,
    kv_heads: usize,
    head_dim: usize,
}

/// One sequence's part in a step: its block table and how many positions it already holds.
/// The table must have room for those and the step's new tokens.
#[derive(Debug, Clone, Copy)]
pub struct PagedSeq<'a> {
    /// The blocks holding positions `0..`, [`BLOCK_TOKENS`] each, in order.
    pub blocks: &'a [u32],
    /// Positions already stored (the position of the step's first new token).
    pub cached: usize,
}

impl PagedSeq<'_> {
    /// Where position `p` lives: its block and slot.
    fn place(&self, p: usize) -> (usize, usize) {
        (self.blocks[p / BLOCK_TOKENS] as usize, p % BLOCK_TOKENS)
    }
}

/// Blocks needed to hold `tokens` positions.
pub fn blocks_for(tokens: usize) -> usize {
    tokens.div_ceil(BLOCK_TOKENS)
}

impl PagedKv {
    /// A pool of `blocks` blocks for `config`'s layers. The memory is zeroed lazily by the
    /// operating system, so blocks never used cost address space only.
    pub fn new(config: &LlamaConfig, blocks: usize) -> PagedKv {
        let per_layer = blocks * config.n_kv_heads * BLOCK_TOKENS * config.head_dim;
        PagedKv {
            keys: (0..config.n_layers).map(|_| vec![0.0; per_layer]).collect(),
            values: (0..config.n_layers).map(|_| vec![0.0; per_layer]).collect(),
            blocks,
            kv_heads: config.n_kv_heads,
            head_dim: config.head_dim,
        }
    }

    /// Blocks in the pool.
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// Bytes one block takes over all layers (keys and values).
    pub fn block_bytes(&self) -> usize {
        2 * self.keys.len() * self.block_len() * std::mem::size_of::<f32>()
    }

    /// Floats of one block in one layer's keys (or values).
    fn block_len(&self) -> usize {
        self.kv_heads * BLOCK_TOKENS * self.head_dim
    }

    /// Copies block `from` into block `to` in every layer (copy-on-write of a shared block).
    pub fn copy_block(&mut self, from: u32, to: u32) {
        let n = self.block_len();
        let (from, to) = (from as usize * n, to as usize * n);
        for store in self.keys.iter_mut().chain(self.values.iter_mut()) {
            store.copy_within(from..from + n, to);
        }
    }

    /// Checks that every sequence's table covers its positions after `new[i]` more tokens and
    /// names only blocks of the pool.
    pub fn check(&self, seqs: &[PagedSeq], new: &[usize]) -> Result<()> {
        for (i, (seq, &n)) in seqs.iter().zip(new).enumerate() {
            let need = blocks_for(seq.cached + n);
            if seq.blocks.len() < need {
                candle_core::bail!(
                    "sequence {i} holds {} blocks but {} positions need {need}",
                    seq.blocks.len(),
                    seq.cached + n
                );
            }
            if let Some(bad) = seq.blocks[..need]
                .iter()
                .find(|&&b| b as usize >= self.blocks)
            {
                candle_core::bail!(
                    "sequence {i} names block {bad} of a pool of {}",
                    self.blocks
                );
            }
        }
        Ok(())
    }

    /// Stores layer `layer`'s new keys and values: rows `spans[i]` of `k`, `v`
    /// (`[rows, kv_heads · head_dim]`) at positions `seqs[i].cached..` of sequence `i`.
    pub fn write(
        &mut self,
        layer: usize,
        seqs: &[PagedSeq],
        spans: &[(usize, usize)],
        k: &[f32],
        v: &[f32],
    ) {
        let (kvh, hd) = (self.kv_heads, self.head_dim);
        let width = kvh * hd;
        let (keys, values) = (&mut self.keys[layer], &mut self.values[layer]);
        for (seq, &(row, len)) in seqs.iter().zip(spans) {
            for t in 0..len {
                let (block, slot) = seq.place(seq.cached + t);
                let source = (row + t) * width;
                for g in 0..kvh {
                    let at = ((block * kvh + g) * BLOCK_TOKENS + slot) * hd;
                    let from = source + g * hd;
                    keys[at..at + hd].copy_from_slice(&k[from..from + hd]);
                    values[at..at + hd].copy_from_slice(&v[from..from + hd]);
                }
            }
        }
    }

    /// Causal attention of layer `layer` for the step's query rows `q` (`[rows, heads ·
    /// head_dim]`, RoPE applied; rows `spans[i]` belong to sequence `i`, whose keys and values
    /// for these rows are already written): each row attends over its sequence's positions up
    /// to its own. Returns `[rows, heads · head_dim]`.
    pub fn attend(
        &self,
        layer: usize,
        seqs: &[PagedSeq],
        spans: &[(usize, usize)],
        q: &[f32],
        n_heads: usize,
    ) -> Vec<f32> {
        let (kvh, hd) = (self.kv_heads, self.head_dim);
        let group = n_heads / kvh;
        // Each query row's sequence and position.
        let mut rows = Vec::with_capacity(q.len() / (n_heads * hd));
        let mut work = 0;
        for (s, &(_, len)) in spans.iter().enumerate() {
            for t in 0..len {
                let position = seqs[s].cached + t;
                rows.push((s, position));
                work += (position + 1) * n_heads * hd;
            }
        }
        let mut out = vec![0f32; rows.len() * n_heads * hd];
        let (keys, values) = (&self.keys[layer], &self.values[layer]);
        let scale = 1.0 / (hd as f32).sqrt();
        // One item per query row and KV head: the `group` query heads that share it.
        let item = |index: usize, out: &mut [f32]| {
            let (r, g) = (index / kvh, index % kvh);
            let (s, position) = rows[r];
            let seq = &seqs[s];
            SCORES.with(|scores| {
                let mut scores = scores.borrow_mut();
                scores.resize(position + 1, 0.0);
                for j in 0..group {
                    let head = g * group + j;
                    let query = &q[(r * n_heads + head) * hd..][..hd];
                    let mut max = f32::NEG_INFINITY;
                    for (p, score) in scores.iter_mut().enumerate() {
                        let (block, slot) = seq.place(p);
                        let at = ((block * kvh + g) * BLOCK_TOKENS + slot) * hd;
                        *score = dot(query, &keys[at..at + hd]) * scale;
                        max = max.max(*score);
                    }
                    let mut sum = 0f32;
                    for score in scores.iter_mut() {
                        *score = (*score - max).exp();
                        sum += *score;
                    }
                    let head_out = &mut out[j * hd..(j + 1) * hd];
                    for (p, &weight) in scores.iter().enumerate() {
                        let (block, slot) = seq.place(p);
                        let at = ((block * kvh + g) * BLOCK_TOKENS + slot) * hd;
                        add_scaled(head_out, weight, &values[at..at + hd]);
                    }
                    let inverse = 1.0 / sum;
                    head_out.iter_mut().for_each(|x| *x *= inverse);
                }
            });
        };
        // Query heads of one KV head are adjacent in a row: each item owns `group · hd` floats.
        let mut items: Vec<&mut [f32]> = out.chunks_mut(group * hd).collect();
        if work < PARALLEL_MIN_WORK {
            items.iter_mut().enumerate().for_each(|(i, o)| item(i, o));
        } else {
            par_for_each(&mut items, |i, o| item(i, o));
        }
        out
    }
}

thread_local! {
    /// One attention row's scores, kept between calls so a step allocates nothing per row.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `Σ a[i]·b[i]` in 16 lanes summed in a fixed order (vectorised by the compiler, and the same
/// result wherever it runs).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let (a16, b16) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (a16.remainder(), b16.remainder());
    for (x, y) in a16.zip(b16) {
        for i in 0..16 {
            lanes[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}

/// `out += weight · v`.
fn add_scaled(out: &mut [f32], weight: f32, v: &[f32]) {
    for (o, x) in out.iter_mut().zip(v) {
        *o += weight * x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_util::seeded::uniform;

    /// Causal attention of one sequence's rows in f64, straight from the definition.
    fn reference(q: &[f32], k: &[f32], v: &[f32], heads: usize, kvh: usize, hd: usize) -> Vec<f32> {
        let rows = q.len() / (heads * hd);
        let mut out = vec![0f32; q.len()];
        for r in 0..rows {
            for h in 0..heads {
                let g = h / (heads / kvh);
                let query = &q[(r * heads + h) * hd..][..hd];
                let key = |p: usize| &k[(p * kvh + g) * hd..][..hd];
                let scores: Vec<f64> = (0..=r)
                    .map(|p| {
                        let d: f64 = query
                            .iter()
                            .zip(key(p))
                            .map(|(a, b)| f64::from(a * b))
                            .sum();
                        d / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = weights.iter().sum();
                for d in 0..hd {
                    let x: f64 = (0..=r)
                        .map(|p| weights[p] * f64::from(v[(p * kvh + g) * hd + d]))
                        .sum();
                    out[(r * heads + h) * hd + d] = (x / sum) as f32;
                }
            }
        }
        out
    }

    /// Two sequences in scattered blocks, one read in two steps (so its second step attends over
    /// stored positions), against the f64 definition; the large scores make the softmax peaky.
    #[test]
    fn attention_over_blocks_is_causal_softmax_attention() {
        let config = LlamaConfig {
            n_layers: 1,
            n_heads: 6,
            n_kv_heads: 2,
            head_dim: 20,
            ..crate::seeded_weights::tiny_config()
        };
        let (heads, kvh, hd) = (6, 2, 20);
        let mut state = 7u64;
        let mut random = |n: usize, scale: f32| -> Vec<f32> {
            (0..n).map(|_| uniform(&mut state, scale)).collect()
        };
        let lens = [37usize, 21];
        let q: Vec<Vec<f32>> = lens.iter().map(|&n| random(n * heads * hd, 1.5)).collect();
        let k: Vec<Vec<f32>> = lens.iter().map(|&n| random(n * kvh * hd, 1.5)).collect();
        let v: Vec<Vec<f32>> = lens.iter().map(|&n| random(n * kvh * hd, 1.0)).collect();
        let mut kv = PagedKv::new(&config, 8);
        let tables: [&[u32]; 2] = [&[5, 0, 7], &[2, 6]];
        let mut got: Vec<Vec<f32>> = vec![Vec::new(), Vec::new()];
        // Step one: 30 rows of sequence 0 and all of sequence 1; step two: the rest of 0.
        for (first, counts) in [(0usize, [30usize, 21]), (30, [7, 0])] {
            let mut spans = Vec::new();
            let (mut qs, mut ks, mut vs) = (Vec::new(), Vec::new(), Vec::new());
            let mut seqs = Vec::new();
            for s in 0..2 {
                let start = if s == 0 { first } else { 0 };
                if counts[s] == 0 {
                    continue;
                }
                spans.push((qs.len() / (heads * hd), counts[s]));
                let rows = start..start + counts[s];
                qs.extend_from_slice(&q[s][rows.start * heads * hd..rows.end * heads * hd]);
                ks.extend_from_slice(&k[s][rows.start * kvh * hd..rows.end * kvh * hd]);
                vs.extend_from_slice(&v[s][rows.start * kvh * hd..rows.end * kvh * hd]);
                seqs.push((
                    s,
                    PagedSeq {
                        blocks: tables[s],
                        cached: start,
                    },
                ));
            }
            let views: Vec<PagedSeq> = seqs.iter().map(|(_, p)| *p).collect();
            kv.write(0, &views, &spans, &ks, &vs);
            let out = kv.attend(0, &views, &spans, &qs, heads);
            for ((s, _), &(row, n)) in seqs.iter().zip(&spans) {
                got[*s].extend_from_slice(&out[row * heads * hd..(row + n) * heads * hd]);
            }
        }
        for s in 0..2 {
            let want = reference(&q[s], &k[s], &v[s], heads, kvh, hd);
            let worst = got[s]
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "sequence {s}: {worst}");
        }
    }

    #[test]
    fn copying_a_block_copies_every_layer() {
        let config = crate::seeded_weights::tiny_config();
        let mut kv = PagedKv::new(&config, 3);
        let width = config.n_kv_heads * config.head_dim;
        let k: Vec<f32> = (0..width).map(|i| i as f32).collect();
        let seq = [PagedSeq {
            blocks: &[1],
            cached: 4,
        }];
        for layer in 0..config.n_layers {
            kv.write(layer, &seq, &[(0, 1)], &k, &k);
        }
        kv.copy_block(1, 2);
        for layer in 0..config.n_layers {
            assert_eq!(
                kv.keys[layer][2 * kv.block_len()..],
                kv.keys[layer][kv.block_len()..2 * kv.block_len()]
            );
            assert_eq!(
                kv.values[layer][2 * kv.block_len()..],
                kv.values[layer][kv.block_len()..2 * kv.block_len()]
            );
        }
        assert!(kv.keys[0][kv.block_len()..2 * kv.block_len()].contains(&5.0));
    }
}

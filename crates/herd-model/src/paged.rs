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

    /// A pool for one sequence of up to `tokens` positions, with the table that names its
    /// blocks in order (a session, a scoring pass, a benchmark).
    pub fn single(config: &LlamaConfig, tokens: usize) -> (PagedKv, Vec<u32>) {
        let blocks = blocks_for(tokens);
        (PagedKv::new(config, blocks), (0..blocks as u32).collect())
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
                    let base = (block * kvh + g) * BLOCK_TOKENS * hd;
                    let from = source + g * hd;
                    // Keys stored transposed within the block: dimension-major.
                    for (d, &x) in k[from..from + hd].iter().enumerate() {
                        keys[base + d * BLOCK_TOKENS + slot] = x;
                    }
                    let at = base + slot * hd;
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
        let heads = HeadGroups {
            keys: &self.keys[layer],
            values: &self.values[layer],
            kv_heads: kvh,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
        };
        let kernel = Kernel::detect();
        // One item per query row and KV head: the `group` query heads that share it, adjacent
        // in the row, so each item owns `group · hd` floats of the output.
        let item = |index: usize, out: &mut [f32]| {
            let (r, g) = (index / kvh, index % kvh);
            let (s, position) = rows[r];
            let queries = &q[index * group * hd..][..group * hd];
            SCORES.with(|scores| {
                let mut scores = scores.borrow_mut();
                scores.resize(position + 1, 0.0);
                kernel.run(&heads, &seqs[s], g, queries, &mut scores, out);
            });
        };
        let mut items: Vec<&mut [f32]> = out.chunks_mut(group * hd).collect();
        if work < PARALLEL_MIN_WORK {
            items.iter_mut().enumerate().for_each(|(i, o)| item(i, o));
        } else {
            par_for_each(&mut items, |i, o| item(i, o));
        }
        out
    }
}

/// One layer's keys and values and the shape of its attention.
struct HeadGroups<'a> {
    keys: &'a [f32],
    values: &'a [f32],
    kv_heads: usize,
    head_dim: usize,
    scale: f32,
}

impl HeadGroups<'_> {
    /// The query heads `queries` (`[group, head_dim]`) of KV head `g` over `seq`'s positions
    /// `0..scores.len()`: scores, softmax, weighted values into `out` (`[group, head_dim]`).
    #[inline(always)]
    fn attend<S: BlockScores>(
        &self,
        seq: &PagedSeq,
        g: usize,
        queries: &[f32],
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        let hd = self.head_dim;
        let size = BLOCK_TOKENS * hd;
        let block = |b: usize| (seq.blocks[b] as usize * self.kv_heads + g) * size;
        for (query, head_out) in queries.chunks_exact(hd).zip(out.chunks_exact_mut(hd)) {
            // The maximum is the same in any order; it is taken over whole blocks of lanes.
            let mut max = [f32::NEG_INFINITY; BLOCK_TOKENS];
            for (b, scores) in scores.chunks_mut(BLOCK_TOKENS).enumerate() {
                let start = block(b);
                let all = S::block_scores(query, &self.keys[start..start + size]);
                for (i, (score, &raw)) in scores.iter_mut().zip(&all).enumerate() {
                    *score = raw * self.scale;
                    max[i] = max[i].max(*score);
                }
            }
            let max = max.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum = exp_and_sum(scores, max);
            head_out.fill(0.0);
            for (b, weights) in scores.chunks(BLOCK_TOKENS).enumerate() {
                let start = block(b);
                let values = &self.values[start..start + size];
                for (&weight, value) in weights.iter().zip(values.chunks_exact(hd)) {
                    add_scaled(head_out, weight, value);
                }
            }
            let inverse = 1.0 / sum;
            head_out.iter_mut().for_each(|x| *x *= inverse);
        }
    }
}

/// Lanes of the softmax's sums: scores are added into these in turn, then the lanes halved
/// pairwise — a fixed order, so every vector width gives the same sum.
const LANES: usize = 16;

/// Replaces each score by `e^(score − max)` and returns their sum.
#[inline(always)]
fn exp_and_sum(scores: &mut [f32], max: f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let mut chunks = scores.chunks_exact_mut(LANES);
    for chunk in chunks.by_ref() {
        let chunk: &mut [f32; LANES] = chunk.try_into().expect("a whole chunk");
        for i in 0..LANES {
            chunk[i] = exp_nonpositive(chunk[i] - max);
            lanes[i] += chunk[i];
        }
    }
    for (i, score) in chunks.into_remainder().iter_mut().enumerate() {
        *score = exp_nonpositive(*score - max);
        lanes[i] += *score;
    }
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            lanes[i] += lanes[i + width];
        }
        width /= 2;
    }
    lanes[0]
}

/// The dot products of `query` with the [`BLOCK_TOKENS`] keys of one block, stored transposed
/// (`keys[d · BLOCK_TOKENS + slot]`): dimension `d` adds `query[d] · keys[d]` (a vector over
/// the slots, multiplied then added — never fused) into accumulator `d mod 4`, and the four are
/// summed as `(a0 + a1) + (a2 + a3)`. No horizontal sums, and every implementation below gives
/// the same bits. Slots past a sequence's end give values the caller ignores.
trait BlockScores {
    fn block_scores(query: &[f32], keys: &[f32]) -> [f32; BLOCK_TOKENS];
}

/// [`BlockScores`] in plain Rust.
struct Portable;

impl BlockScores for Portable {
    #[inline(always)]
    fn block_scores(query: &[f32], keys: &[f32]) -> [f32; BLOCK_TOKENS] {
        let mut acc = [[0f32; BLOCK_TOKENS]; 4];
        for (d, &q) in query.iter().enumerate() {
            let row = &keys[d * BLOCK_TOKENS..(d + 1) * BLOCK_TOKENS];
            for (a, &k) in acc[d % 4].iter_mut().zip(row) {
                *a += q * k;
            }
        }
        std::array::from_fn(|i| (acc[0][i] + acc[1][i]) + (acc[2][i] + acc[3][i]))
    }
}

/// [`BlockScores`] in AVX2: the 16 slots as two 8-lane registers.
#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
impl BlockScores for Avx2 {
    #[inline(always)]
    fn block_scores(query: &[f32], keys: &[f32]) -> [f32; BLOCK_TOKENS] {
        use std::arch::x86_64::*;
        assert!(keys.len() >= query.len() * BLOCK_TOKENS);
        // SAFETY: only reached from `attend_avx2`, compiled for AVX2 after `Kernel::detect`
        // found it; every load reads 8 floats inside `keys` (checked above).
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; 4];
            for (d, &q) in query.iter().enumerate() {
                let q = _mm256_set1_ps(q);
                let row = keys.as_ptr().add(d * BLOCK_TOKENS);
                for (h, a) in acc[d % 4].iter_mut().enumerate() {
                    let k = _mm256_loadu_ps(row.add(8 * h));
                    *a = _mm256_add_ps(*a, _mm256_mul_ps(q, k));
                }
            }
            let mut out = [0f32; BLOCK_TOKENS];
            for (h, half) in out.chunks_exact_mut(8).enumerate() {
                let left = _mm256_add_ps(acc[0][h], acc[1][h]);
                let right = _mm256_add_ps(acc[2][h], acc[3][h]);
                _mm256_storeu_ps(half.as_mut_ptr(), _mm256_add_ps(left, right));
            }
            out
        }
    }
}

/// [`BlockScores`] in AVX-512: the 16 slots in one register.
#[cfg(target_arch = "x86_64")]
struct Avx512;

#[cfg(target_arch = "x86_64")]
impl BlockScores for Avx512 {
    #[inline(always)]
    fn block_scores(query: &[f32], keys: &[f32]) -> [f32; BLOCK_TOKENS] {
        use std::arch::x86_64::*;
        assert!(keys.len() >= query.len() * BLOCK_TOKENS);
        // SAFETY: only reached from `attend_avx512`, compiled for AVX-512F after
        // `Kernel::detect` found it; every load reads 16 floats inside `keys` (checked above).
        unsafe {
            let mut acc = [_mm512_setzero_ps(); 4];
            for (d, &q) in query.iter().enumerate() {
                let k = _mm512_loadu_ps(keys.as_ptr().add(d * BLOCK_TOKENS));
                acc[d % 4] = _mm512_add_ps(acc[d % 4], _mm512_mul_ps(_mm512_set1_ps(q), k));
            }
            let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
            let mut out = [0f32; BLOCK_TOKENS];
            _mm512_storeu_ps(out.as_mut_ptr(), sum);
            out
        }
    }
}

/// The widest vector instructions this CPU has for the attention loops. The loops are written
/// so that every width computes the same numbers (lane by lane, no fused multiply-adds): the
/// choice changes speed, never a bit of the result.
#[derive(Debug, Clone, Copy)]
enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Kernel::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }

    fn run(
        self,
        heads: &HeadGroups,
        seq: &PagedSeq,
        g: usize,
        queries: &[f32],
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        match self {
            Kernel::Portable => heads.attend::<Portable>(seq, g, queries, scores, out),
            // SAFETY: `detect` found the features these are compiled for.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { attend_avx2(heads, seq, g, queries, scores, out) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { attend_avx512(heads, seq, g, queries, scores, out) },
        }
    }
}

/// Defines `$name`: [`HeadGroups::attend`] with `$scores`' block scores, compiled for
/// `$feature` (called only after [`Kernel::detect`] found it).
macro_rules! attend_compiled_for {
    ($name:ident, $feature:literal, $scores:ty) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        unsafe fn $name(
            heads: &HeadGroups,
            seq: &PagedSeq,
            g: usize,
            queries: &[f32],
            scores: &mut [f32],
            out: &mut [f32],
        ) {
            heads.attend::<$scores>(seq, g, queries, scores, out)
        }
    };
}

attend_compiled_for!(attend_avx2, "avx2", Avx2);
attend_compiled_for!(attend_avx512, "avx512f", Avx512);

/// `e^x` for `x ≤ 0` (Cephes' `expf`: `2^n · p(r)`, within 2 ulp of the exact value; below
/// −87.3 it gives about 1e-38 rather than 0, harmless beside the softmax's 1). Branch-free, so
/// the loop over a row's scores vectorises — libm's `expf` is a call per score, and a long
/// prompt takes hundreds of millions of them.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.max(-87.3);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let p = p * r * r + r + 1.0;
    f32::from_bits(((n as i32 + 127) << 23) as u32) * p
}

thread_local! {
    /// One attention row's scores, kept between calls so a step allocates nothing per row.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out += weight · v`.
#[inline(always)]
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

    /// Every kernel this CPU runs gives the portable kernel's bits, on a head dimension that is
    /// not a multiple of 4 and a sequence that ends inside a block.
    #[test]
    fn every_vector_width_gives_the_same_bits() {
        let (kvh, hd, group) = (2, 22, 3);
        let mut state = 3u64;
        let mut random =
            |n: usize| -> Vec<f32> { (0..n).map(|_| uniform(&mut state, 2.0)).collect() };
        let (keys, values) = (
            random(4 * kvh * BLOCK_TOKENS * hd),
            random(4 * kvh * BLOCK_TOKENS * hd),
        );
        let heads = HeadGroups {
            keys: &keys,
            values: &values,
            kv_heads: kvh,
            head_dim: hd,
            scale: 0.3,
        };
        let seq = PagedSeq {
            blocks: &[3, 1, 0],
            cached: 0,
        };
        let queries = random(group * hd);
        let run = |kernel: Kernel| {
            let (mut scores, mut out) = (vec![0f32; 41], vec![0f32; group * hd]);
            kernel.run(&heads, &seq, 1, &queries, &mut scores, &mut out);
            out
        };
        let portable = run(Kernel::Portable);
        assert!(portable.iter().all(|x| x.is_finite() && *x != 0.0));
        let mut kernels = vec![];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                kernels.push(Kernel::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                kernels.push(Kernel::Avx512);
            }
        }
        for kernel in kernels {
            assert_eq!(run(kernel), portable, "{kernel:?}");
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

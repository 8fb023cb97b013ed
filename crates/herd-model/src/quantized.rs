//! Matrix products with Q4_1, Q8_0 and F16 weights, the arithmetic of llama.cpp's ggml:
//! activations are quantized to blocks of 32 bytes (scale `d = amax/127` stored as f16, values
//! `round_half_even(x · 127/amax)`, and for Q4_1's `q8_1` the block sum `s = f16(d · Σq)`); each
//! block then contributes `d_w · d_a · Σ q_w q_a` (+ `m_w · s_a` for Q4_1), with AVX-512 VNNI or
//! AVX2 on x86. Tested against ggml's own functions (`tests/ggml_quant_ops.rs`). F16 weights are
//! multiplied with f32 activations as they are (converted to f32 in registers, 16 at a time with
//! AVX-512), half the memory traffic of the dequantized f32 copy candle would make.
//!
//! Written here because candle 0.11 has no SIMD Q4_1 dot product (its scalar loop took 78% of
//! decode time) and its Q8_0 path processes one activation row at a time. The rounding is
//! ggml's, yet a 30-layer model's logits still differ from llama.cpp's by 0.1–0.6: every op before
//! a quantized matmul would have to round as ggml does (see docs/BENCHMARKS.md).
//!
//! Layout: ggml's blocks (`block_q4_1` = f16 d, f16 m, 16 bytes of nibbles, low nibbles elements
//! 0–15, high 16–31; `block_q8_0` = f16 d, 32 × i8) are split when loaded into the rows' packed
//! values and their f16 scales (and minima), the scales of a row padded with zeros to a multiple
//! of 8 blocks. A quantized dot product then takes 8 blocks at a time: 8 exact integer block sums
//! are gathered into one vector, converted once and scaled by the 8 blocks' `d_w · d_a` in one
//! multiply, instead of one convert and one broadcast multiply per block.
//!
//! The product runs in tiles: 4 activation rows share each unpacked weight block, and for F16
//! 4 weight rows share each activation vector.

use std::sync::OnceLock;

use candle_core::quantized::GgmlDType;
use half::f16;

use crate::kernel::{par_for_each, SharedMut};

/// Elements per quantization block.
pub const BLOCK: usize = 32;

/// Blocks whose sums are scaled together (lanes of one 256-bit f32 vector).
const GROUP: usize = 8;

/// Weight rows and activation rows per tile.
const TILE: usize = 4;

/// A weight matrix `[rows, cols]` in a format this module computes with, split into packed
/// values and per-block scales (see the module doc).
#[derive(Debug, Clone)]
pub struct QuantMatrix {
    format: Format,
    rows: usize,
    cols: usize,
    /// Per row, its blocks' values back to back (nibbles, i8 or f16).
    values: Vec<u8>,
    /// Per row, its blocks' f16 scales `d`, padded to a multiple of [`GROUP`], in [`slot`] order.
    scales: Vec<u16>,
    /// Per row, its blocks' f16 minima `m` (Q4_1), padded like `scales`.
    mins: Vec<u16>,
}

/// The weight formats herd computes with itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Q4_1,
    Q8_0,
    F16,
}

impl Format {
    /// Bytes of one ggml block of 32 weights.
    fn block_bytes(self) -> usize {
        match self {
            Format::Q4_1 => 20,
            Format::Q8_0 => 34,
            Format::F16 => 64,
        }
    }

    /// Bytes of a block's values, without its scale and minimum.
    fn value_bytes(self) -> usize {
        match self {
            Format::Q4_1 => 16,
            Format::Q8_0 => 32,
            Format::F16 => 64,
        }
    }
}

/// One weight row: its values and (quantized formats) its padded scales and minima.
#[derive(Debug, Clone, Copy)]
struct Row<'a> {
    values: &'a [u8],
    scales: &'a [u16],
    mins: &'a [u16],
}

/// The activation rows of one product, in the form the weight format multiplies with.
enum Activations<'a> {
    /// Quantized rows (Q4_1 and Q8_0 weights).
    Q8(Vec<Q8Row>),
    /// Rows of `cols` floats, as given (F16 weights).
    F32 { x: &'a [f32], cols: usize },
}

/// Activations of one row in `q8_1` blocks: the 32 values of each block, and per block (padded
/// with zeros to a multiple of [`GROUP`], in [`slot`] order) the scale, ggml's `s` (unused by
/// Q8_0 weights, whose `q8_0` activations are otherwise the same), and `128 · Σq` (the
/// correction for Q8_0 weights offset to unsigned bytes by the VNNI kernel).
#[derive(Default)]
struct Q8Row {
    q: Vec<[i8; BLOCK]>,
    d: Vec<f32>,
    s: Vec<f32>,
    offset: Vec<i32>,
}

fn f16_value(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}

/// Blocks rounded up to whole groups.
fn padded(blocks: usize) -> usize {
    blocks.next_multiple_of(GROUP)
}

/// Where block `b`'s scale (minimum, activation scale, sum) is stored: within each group the
/// even blocks come first, then the odd ones, the order in which the AVX-512 kernel's lane sums
/// come out (pairs of blocks share a 512-bit register).
fn slot(b: usize) -> usize {
    const SLOT: [usize; GROUP] = [0, 4, 1, 5, 2, 6, 3, 7];
    b - b % GROUP + SLOT[b % GROUP]
}

/// ggml's `quantize_row_q8_1` (x86 path) of one activation row.
fn quantize_row(x: &[f32]) -> Q8Row {
    let blocks = x.len() / BLOCK;
    let mut row = Q8Row {
        q: Vec::with_capacity(blocks),
        d: vec![0.0; padded(blocks)],
        s: vec![0.0; padded(blocks)],
        offset: vec![0; padded(blocks)],
    };
    let isa = isa();
    for (b, block) in x.chunks_exact(BLOCK).enumerate() {
        let block: &[f32; BLOCK] = block.try_into().expect("a whole block");
        // SAFETY: `isa()` checked that the CPU has the features the kernel needs.
        let (q, amax, sum) = match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx2 => unsafe { simd::quantize_block(block) },
            Isa::Scalar => quantize_block_scalar(block),
        };
        let d = amax / 127.0;
        row.q.push(q);
        row.d[slot(b)] = f16::from_f32(d).to_f32();
        row.s[slot(b)] = f16::from_f32(d * sum as f32).to_f32();
        // Wrapping like the vector instructions: only non-finite activations (a corrupt
        // model's) come near the limits.
        row.offset[slot(b)] = sum.wrapping_mul(128);
    }
    row
}

/// A block's values `round_half_even(x · 127/amax)`, `amax` and the values' sum.
fn quantize_block_scalar(block: &[f32; BLOCK]) -> ([i8; BLOCK], f32, i32) {
    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut q = [0i8; BLOCK];
    let mut sum = 0i32;
    for (qi, &v) in q.iter_mut().zip(block) {
        // As `cvtps2dq` and `packssdw`/`packsswb`: out-of-range and NaN values become
        // i32::MIN, and bytes saturate (both only for non-finite input).
        let f = (v * id).round_ties_even();
        let r = if (-2_147_483_648.0..2_147_483_648.0).contains(&f) {
            f as i32
        } else {
            i32::MIN
        };
        *qi = r.clamp(-128, 127) as i8;
        sum = sum.wrapping_add(r);
    }
    (q, amax, sum)
}

impl QuantMatrix {
    /// Takes raw ggml data apart; `None` unless it is Q4_1, Q8_0 or F16 of that shape.
    pub fn new(dtype: GgmlDType, rows: usize, cols: usize, data: &[u8]) -> Option<QuantMatrix> {
        let format = match dtype {
            GgmlDType::Q4_1 => Format::Q4_1,
            GgmlDType::Q8_0 => Format::Q8_0,
            GgmlDType::F16 => Format::F16,
            _ => return None,
        };
        let blocks = cols / BLOCK;
        let bytes = rows
            .checked_mul(blocks)
            .and_then(|n| n.checked_mul(format.block_bytes()));
        if !cols.is_multiple_of(BLOCK) || bytes != Some(data.len()) {
            return None;
        }
        if format == Format::F16 {
            return Some(QuantMatrix {
                format,
                rows,
                cols,
                values: data.to_vec(),
                scales: Vec::new(),
                mins: Vec::new(),
            });
        }
        let header = format.block_bytes() - format.value_bytes();
        let mut values = Vec::with_capacity(rows * blocks * format.value_bytes());
        let mut scales = vec![0u16; rows * padded(blocks)];
        let mut mins = match format {
            Format::Q4_1 => vec![0u16; scales.len()],
            _ => Vec::new(),
        };
        for (i, block) in data.chunks_exact(format.block_bytes()).enumerate() {
            let at = i / blocks * padded(blocks) + slot(i % blocks);
            scales[at] = u16::from_le_bytes([block[0], block[1]]);
            if format == Format::Q4_1 {
                mins[at] = u16::from_le_bytes([block[2], block[3]]);
            }
            values.extend_from_slice(&block[header..]);
        }
        Some(QuantMatrix {
            format,
            rows,
            cols,
            values,
            scales,
            mins,
        })
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Weight row `r`.
    fn row(&self, r: usize) -> Row<'_> {
        let blocks = self.cols / BLOCK;
        let bytes = blocks * self.format.value_bytes();
        let group = r * padded(blocks)..(r + 1) * padded(blocks);
        Row {
            values: &self.values[r * bytes..(r + 1) * bytes],
            scales: self.scales.get(group.clone()).unwrap_or_default(),
            mins: self.mins.get(group).unwrap_or_default(),
        }
    }

    /// `y = x Wᵀ` for `x` of shape `[n, cols]` (row-major); returns `[n, rows]`.
    pub fn matmul(&self, x: &[f32], n: usize) -> Vec<f32> {
        QuantMatrix::matmul_many(&[self], x, n)
            .pop()
            .expect("one product per matrix")
    }

    /// Whether [`QuantMatrix::matmul_many`] can take `self` and `other` together: the same
    /// format and input width, hence the same prepared activations.
    pub fn shares_input_with(&self, other: &QuantMatrix) -> bool {
        self.format == other.format && self.cols == other.cols
    }

    /// `x Wᵀ` for each matrix `W` of `matrices` (which must share their input, see
    /// [`QuantMatrix::shares_input_with`]): the activations are prepared once and all products
    /// run in one pass of the worker pool (one barrier instead of one per matrix — Q, K and V,
    /// or gate and up, in a decode step).
    ///
    /// Panics unless `x` holds exactly `n` rows of the matrices' width (the SIMD kernels read
    /// that many values).
    pub fn matmul_many(matrices: &[&QuantMatrix], x: &[f32], n: usize) -> Vec<Vec<f32>> {
        let first = matrices[0];
        assert!(
            matrices.iter().all(|m| first.shares_input_with(m)),
            "matmul_many: the matrices must share format and input width"
        );
        assert_eq!(
            Some(x.len()),
            n.checked_mul(first.cols),
            "matmul_many: {n} rows of {} inputs expected",
            first.cols
        );
        let acts = match first.format {
            Format::F16 => Activations::F32 {
                x,
                cols: first.cols,
            },
            Format::Q4_1 | Format::Q8_0 => Activations::Q8(quantize_rows(x, first.cols)),
        };
        let mut ys: Vec<Vec<f32>> = matrices.iter().map(|m| vec![0f32; n * m.rows]).collect();
        let outs: Vec<Output> = matrices
            .iter()
            .zip(&mut ys)
            .map(|(m, y)| Output {
                y: SharedMut(y.as_mut_ptr()),
                rows: m.rows,
            })
            .collect();
        // Work items are tiles of weight rows, numbered across the matrices: a thread reuses its
        // rows for every activation row while they are in cache. They run on candle's worker
        // pool, so herd's kernel and candle's ops share the same threads instead of competing
        // for the cores.
        let isa = isa();
        let mut starts = Vec::with_capacity(matrices.len());
        let mut tiles = 0;
        for m in matrices {
            starts.push(tiles);
            tiles += m.rows.div_ceil(TILE);
        }
        candle_core::utils::barrier_pool().execute_chunked(tiles, |range| {
            for tile in range {
                let which = starts.partition_point(|&start| start <= tile) - 1;
                let (m, out) = (matrices[which], &outs[which]);
                let row0 = (tile - starts[which]) * TILE;
                if row0 + TILE <= m.rows {
                    let w: [Row; TILE] = std::array::from_fn(|i| m.row(row0 + i));
                    m.tile_rows(isa, w, &acts, n, row0, out);
                } else {
                    for r in row0..m.rows {
                        m.tile_rows(isa, [m.row(r)], &acts, n, r, out);
                    }
                }
            }
        });
        ys
    }

    /// The `R` weight rows from `first` on against every activation row, `TILE` activation
    /// rows at a time.
    fn tile_rows<const R: usize>(
        &self,
        isa: Isa,
        w: [Row; R],
        acts: &Activations,
        n: usize,
        first: usize,
        out: &Output,
    ) {
        let mut j = 0;
        while j < n {
            if j + TILE <= n {
                out.put(j, first, dot_tile::<R, TILE>(isa, self.format, w, acts, j));
                j += TILE;
            } else {
                out.put(j, first, dot_tile::<R, 1>(isa, self.format, w, acts, j));
                j += 1;
            }
        }
    }
}

/// The result `[n, rows]` of a product, written by the pool's threads, each to the weight rows
/// of its own tiles.
struct Output {
    y: SharedMut<f32>,
    rows: usize,
}

impl Output {
    /// Stores the `[R][N]` tile of weight rows from `first` and activation rows from `j`.
    fn put<const R: usize, const N: usize>(&self, j: usize, first: usize, tile: [[f32; N]; R]) {
        for (r, values) in tile.iter().enumerate() {
            for (i, &v) in values.iter().enumerate() {
                let index = (j + i) * self.rows + first + r;
                // SAFETY: `index` < n·rows (j + i < n, first + r < rows), and no other thread
                // writes this weight row.
                unsafe { *self.y.at(index) = v };
            }
        }
    }
}

/// Activation rows quantized on candle's worker pool (one row inline: a decode step).
fn quantize_rows(x: &[f32], cols: usize) -> Vec<Q8Row> {
    let n = x.len() / cols;
    if n == 1 {
        return vec![quantize_row(x)];
    }
    let mut rows: Vec<Q8Row> = (0..n).map(|_| Q8Row::default()).collect();
    par_for_each(&mut rows, |j, row| {
        *row = quantize_row(&x[j * cols..(j + 1) * cols]);
    });
    rows
}

/// The best dot-product kernel this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// Detected once per process.
fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") && has!("f16c") {
                let avx512 =
                    has!("avx512f") && has!("avx512bw") && has!("avx512vnni") && has!("avx512vl");
                return if avx512 { Isa::Avx512 } else { Isa::Avx2 };
            }
        }
        Isa::Scalar
    })
}

/// `R` weight rows against the `N` activation rows from row `j` on.
fn dot_tile<const R: usize, const N: usize>(
    isa: Isa,
    format: Format,
    w: [Row; R],
    acts: &Activations,
    j: usize,
) -> [[f32; N]; R] {
    match acts {
        Activations::Q8(rows) => {
            let a: [&Q8Row; N] = std::array::from_fn(|i| &rows[j + i]);
            w.map(|w| dot_rows(isa, format, w, a))
        }
        Activations::F32 { x, cols } => {
            let a: [&[f32]; N] = std::array::from_fn(|i| &x[(j + i) * cols..(j + i + 1) * cols]);
            let w = w.map(|w| w.values);
            // SAFETY: `isa()` checked that the CPU has the features each kernel needs.
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { simd::f16_avx512(w, a) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { simd::f16_avx2(w, a) },
                Isa::Scalar => w.map(|w| a.map(|a| dot_f16_scalar(w, a))),
            }
        }
    }
}

/// One quantized weight row against `N` quantized activation rows.
fn dot_rows<const N: usize>(isa: Isa, format: Format, w: Row, acts: [&Q8Row; N]) -> [f32; N] {
    // SAFETY: `isa()` checked that the CPU has the features each kernel needs.
    // One activation row (a decode step) streams the weights: 256-bit registers measured faster
    // there; several rows reuse them: two blocks per 512-bit register.
    match (isa, format) {
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, Format::Q4_1) if N == 1 => unsafe { simd::q4_1_vnni_256::dot(w, acts) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, Format::Q8_0) if N == 1 => unsafe { simd::q8_0_vnni_256::dot(w, acts) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, Format::Q4_1) => unsafe { simd::q4_1_avx512::dot(w, acts) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, Format::Q8_0) => unsafe { simd::q8_0_avx512::dot(w, acts) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, Format::Q4_1) => unsafe { simd::q4_1_avx2::dot(w, acts) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, Format::Q8_0) => unsafe { simd::q8_0_avx2::dot(w, acts) },
        (Isa::Scalar, Format::Q4_1) => acts.map(|a| dot_q4_1_scalar(w, a)),
        (Isa::Scalar, Format::Q8_0) => acts.map(|a| dot_q8_0_scalar(w, a)),
        (_, Format::F16) => unreachable!("F16 weights multiply f32 activations"),
    }
}

/// Σ w x over an F16 row (the reference the SIMD kernels are tested against).
fn dot_f16_scalar(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(2)
        .zip(x)
        .map(|(h, &x)| f16_value(u16::from_le_bytes([h[0], h[1]])) * x)
        .sum()
}

/// Σ_blocks d_w d_a Σ q_w q_a + m_w s_a (the reference the SIMD kernels are tested against).
fn dot_q4_1_scalar(w: Row, a: &Q8Row) -> f32 {
    let mut acc = 0f32;
    let mut summs = 0f32;
    for (b, qs) in w.values.chunks_exact(16).enumerate() {
        let (low, high) = a.q[b].split_at(16);
        let sumi: i32 = qs
            .iter()
            .zip(low.iter().zip(high))
            .map(|(&q, (&x0, &x1))| (q & 0x0f) as i32 * x0 as i32 + (q >> 4) as i32 * x1 as i32)
            .sum();
        acc += f16_value(w.scales[slot(b)]) * a.d[slot(b)] * sumi as f32;
        summs += f16_value(w.mins[slot(b)]) * a.s[slot(b)];
    }
    acc + summs
}

/// Σ_blocks d_w d_a Σ q_w q_a (the reference the SIMD kernels are tested against).
fn dot_q8_0_scalar(w: Row, a: &Q8Row) -> f32 {
    let mut acc = 0f32;
    for (b, qs) in w.values.chunks_exact(32).enumerate() {
        let sumi: i32 = qs
            .iter()
            .zip(&a.q[b])
            .map(|(&q, &x)| q as i8 as i32 * x as i32)
            .sum();
        acc += f16_value(w.scales[slot(b)]) * a.d[slot(b)] * sumi as f32;
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod simd {
    //! x86 versions. A block's integer sum Σ q_w q_a is formed in 8 i32 lanes of 4 byte
    //! products each — in one instruction with AVX-512 VNNI's `vpdpbusd`, with `maddubs` +
    //! `madd` on AVX2 — and [`GROUP`] blocks' lanes are then summed into one vector of 8 exact
    //! block sums, scaled by their `d_w · d_a` and accumulated. `vpdpbusd` multiplies unsigned
    //! by signed bytes: Q4_1's nibbles are unsigned already; Q8_0's weights are offset by 128
    //! and `128 · Σ q_a` taken off again (exact). AVX2's `maddubs` would saturate on such bytes,
    //! so there the Q8_0 weights' signs move onto the activations (ggml's way).
    use std::arch::x86_64::*;

    use super::{Q8Row, Row, BLOCK, GROUP};

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// [`super::quantize_block_scalar`] on 8 lanes, value for value (the same product by
    /// `127/amax` and round-half-even), packed to bytes as ggml does.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn quantize_block(block: &[f32; BLOCK]) -> ([i8; BLOCK], f32, i32) {
        let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(block.as_ptr().add(8 * i)));
        let sign = _mm256_set1_ps(-0.0);
        let abs = v.map(|v| _mm256_andnot_ps(sign, v));
        let m = _mm256_max_ps(_mm256_max_ps(abs[0], abs[1]), _mm256_max_ps(abs[2], abs[3]));
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
        let ints = v.map(|v| {
            let r = _mm256_round_ps(_mm256_mul_ps(v, id), _MM_FROUND_TO_NEAREST_INT);
            _mm256_cvtps_epi32(r)
        });
        let total = _mm256_add_epi32(
            _mm256_add_epi32(ints[0], ints[1]),
            _mm256_add_epi32(ints[2], ints[3]),
        );
        let total = _mm_add_epi32(
            _mm256_castsi256_si128(total),
            _mm256_extracti128_si256(total, 1),
        );
        let total = _mm_hadd_epi32(total, total);
        let sum = _mm_cvtsi128_si32(_mm_hadd_epi32(total, total));
        // Packing works within 128-bit halves; the permutation puts the bytes back in order.
        let words = _mm256_packs_epi32(ints[0], ints[1]);
        let words2 = _mm256_packs_epi32(ints[2], ints[3]);
        let bytes = _mm256_packs_epi16(words, words2);
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let mut q = [0i8; BLOCK];
        _mm256_storeu_si256(
            q.as_mut_ptr() as *mut __m256i,
            _mm256_permutevar8x32_epi32(bytes, order),
        );
        (q, amax, sum)
    }

    /// The sums of the 8 lanes of each `v[b]`, in [`super::slot`] order.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sum_lanes(v: [__m256i; GROUP]) -> __m256i {
        let t0 = _mm256_hadd_epi32(v[0], v[1]);
        let t1 = _mm256_hadd_epi32(v[2], v[3]);
        let t2 = _mm256_hadd_epi32(v[4], v[5]);
        let t3 = _mm256_hadd_epi32(v[6], v[7]);
        // Per 128-bit half: the partial sums of v0..v3 (u0) and v4..v7 (u1).
        let u0 = _mm256_hadd_epi32(t0, t1);
        let u1 = _mm256_hadd_epi32(t2, t3);
        let sums = _mm256_add_epi32(
            _mm256_permute2x128_si256(u0, u1, 0x20),
            _mm256_permute2x128_si256(u0, u1, 0x31),
        );
        _mm256_permutevar8x32_epi32(sums, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7))
    }

    /// The sums of the 16 lanes of each pair-of-blocks register `v[k]` (blocks `2k`, `2k + 1`)
    /// per block, in [`super::slot`] order.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    unsafe fn sum_pair_lanes(v: [__m512i; GROUP / 2]) -> __m256i {
        // Per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3], then [Σa, Σb, Σc, Σd] of that lane.
        let ab = _mm512_add_epi32(
            _mm512_unpacklo_epi32(v[0], v[1]),
            _mm512_unpackhi_epi32(v[0], v[1]),
        );
        let cd = _mm512_add_epi32(
            _mm512_unpacklo_epi32(v[2], v[3]),
            _mm512_unpackhi_epi32(v[2], v[3]),
        );
        let e = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
        // 128-bit lanes 0+1 hold the even blocks' halves, 2+3 the odd blocks'.
        let f = _mm512_shuffle_i64x2(e, e, 0b11_01_10_00);
        _mm256_add_epi32(_mm512_castsi512_si256(f), _mm512_extracti64x4_epi64(f, 1))
    }

    /// The 32 or 64 bytes of one or two blocks (`two`), zeros after them.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    unsafe fn load_pair(p: *const u8, two: bool) -> __m512i {
        if two {
            _mm512_loadu_si512(p as *const __m512i)
        } else {
            _mm512_maskz_loadu_epi8(0xffff_ffff, p as *const i8)
        }
    }

    /// Two Q4_1 blocks' nibbles as 64 bytes (block `b`'s 32, then `b + 1`'s).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    unsafe fn q4_1_pair(p: *const u8, two: bool) -> __m512i {
        let packed = if two {
            _mm256_loadu_si256(p as *const __m256i)
        } else {
            _mm256_zextsi128_si256(_mm_loadu_si128(p as *const __m128i))
        };
        // [b, b + 1, b >> 4, (b + 1) >> 4] → [b, b >> 4, b + 1, (b + 1) >> 4], low nibbles.
        let both = _mm512_inserti64x4(
            _mm512_castsi256_si512(packed),
            _mm256_srli_epi16(packed, 4),
            1,
        );
        let ordered = _mm512_shuffle_i64x2(both, both, 0b11_01_10_00);
        _mm512_and_si512(ordered, _mm512_set1_epi8(0x0f))
    }

    /// Two Q8_0 blocks offset to unsigned bytes for `vpdpbusd`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    unsafe fn q8_0_pair(p: *const u8, two: bool) -> __m512i {
        _mm512_xor_si512(load_pair(p, two), _mm512_set1_epi8(-128))
    }

    /// Eight f16 values as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn halves(p: *const u16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }

    /// A Q4_1 block's 32 nibbles as bytes: low nibbles are elements 0..16, high 16..32.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn q4_1_weights(p: *const u8, _two: bool) -> [__m256i; 2] {
        let packed = _mm_loadu_si128(p as *const __m128i);
        let bytes = _mm256_and_si256(
            _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed),
            _mm256_set1_epi8(0x0f),
        );
        [bytes, bytes]
    }

    /// A Q8_0 block for `maddubs`: |w| and w (whose signs go onto the activations).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn q8_0_signed_weights(p: *const u8, _two: bool) -> [__m256i; 2] {
        let w = _mm256_loadu_si256(p as *const __m256i);
        [_mm256_sign_epi8(w, w), w]
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn lanes_avx2(w: [__m256i; 2], a: __m256i) -> __m256i {
        let products = _mm256_maddubs_epi16(w[0], _mm256_sign_epi8(a, w[1]));
        _mm256_madd_epi16(products, _mm256_set1_epi16(1))
    }

    /// AVX2 loads one block's activations per register (`two` is for the AVX-512 signature).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load_block(p: *const u8, _two: bool) -> __m256i {
        _mm256_loadu_si256(p as *const __m256i)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    unsafe fn lanes_vnni(w: __m512i, a: __m512i) -> __m512i {
        _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, a)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    unsafe fn lanes_vnni_256(w: [__m256i; 2], a: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), w[0], a)
    }

    /// A Q8_0 block offset to unsigned bytes for `vpdpbusd`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn q8_0_offset_weights(p: *const u8, _two: bool) -> [__m256i; 2] {
        let w = _mm256_loadu_si256(p as *const __m256i);
        let w = _mm256_xor_si256(w, _mm256_set1_epi8(-128));
        [w, w]
    }

    /// One weight row against `N` activation rows, `$unit` blocks per register: each weight
    /// block is prepared once, [`GROUP`] blocks' lane sums are gathered by `$sum` into one
    /// vector of block sums (in [`super::slot`] order), converted and scaled at once. Whole
    /// groups run without a branch; the last, partial group is specialized for its size.
    macro_rules! dot_rows {
        ($name:ident, $features:literal, $bytes:literal, $unit:literal, $weights:ident,
         $acts:ident, $lanes:ident, $sum:ident, $offset:literal) => {
            pub mod $name {
                use super::*;

                #[target_feature(enable = $features)]
                pub unsafe fn dot<const N: usize>(w: Row, acts: [&Q8Row; N]) -> [f32; N] {
                    let blocks = w.values.len() / $bytes;
                    let whole = blocks - blocks % GROUP;
                    let mut acc = [[_mm256_setzero_ps(); N]; 2];
                    for g in (0..whole).step_by(GROUP) {
                        group::<N, GROUP>(w, acts, g, &mut acc);
                    }
                    match blocks - whole {
                        0 => {}
                        1 => group::<N, 1>(w, acts, whole, &mut acc),
                        2 => group::<N, 2>(w, acts, whole, &mut acc),
                        3 => group::<N, 3>(w, acts, whole, &mut acc),
                        4 => group::<N, 4>(w, acts, whole, &mut acc),
                        5 => group::<N, 5>(w, acts, whole, &mut acc),
                        6 => group::<N, 6>(w, acts, whole, &mut acc),
                        _ => group::<N, 7>(w, acts, whole, &mut acc),
                    }
                    std::array::from_fn(|i| hsum(acc[0][i]) + hsum(acc[1][i]))
                }

                /// Blocks `g..g + COUNT` into the accumulators of the scaled block sums
                /// (`acc[0]`) and of Q4_1's `m_w · s_a` terms (`acc[1]`).
                #[inline]
                #[target_feature(enable = $features)]
                unsafe fn group<const N: usize, const COUNT: usize>(
                    w: Row,
                    acts: [&Q8Row; N],
                    g: usize,
                    acc: &mut [[__m256; N]; 2],
                ) {
                    // SAFETY (zeroed): all-zero bytes are a valid SIMD vector.
                    let prepared: [_; GROUP / $unit] = std::array::from_fn(|k| {
                        let b = $unit * k;
                        if b < COUNT {
                            $weights(w.values.as_ptr().add((g + b) * $bytes), b + 1 < COUNT)
                        } else {
                            std::mem::zeroed()
                        }
                    });
                    let dw = halves(w.scales.as_ptr().add(g));
                    for (acc, a) in acc[0].iter_mut().zip(acts) {
                        let q = a.q.as_ptr().add(g) as *const u8;
                        let lanes: [_; GROUP / $unit] = std::array::from_fn(|k| {
                            let b = $unit * k;
                            if b < COUNT {
                                $lanes(prepared[k], $acts(q.add(b * BLOCK), b + 1 < COUNT))
                            } else {
                                std::mem::zeroed()
                            }
                        });
                        let mut sums = $sum(lanes);
                        if $offset {
                            let offset = a.offset.as_ptr().add(g) as *const __m256i;
                            sums = _mm256_sub_epi32(sums, _mm256_loadu_si256(offset));
                        }
                        let scale = _mm256_mul_ps(dw, _mm256_loadu_ps(a.d.as_ptr().add(g)));
                        *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, *acc);
                    }
                    if !w.mins.is_empty() {
                        let mw = halves(w.mins.as_ptr().add(g));
                        for (m, a) in acc[1].iter_mut().zip(acts) {
                            *m = _mm256_fmadd_ps(mw, _mm256_loadu_ps(a.s.as_ptr().add(g)), *m);
                        }
                    }
                }
            }
        };
    }

    dot_rows!(
        q4_1_avx2,
        "avx2,fma,f16c",
        16,
        1,
        q4_1_weights,
        load_block,
        lanes_avx2_q4,
        sum_lanes,
        false
    );
    dot_rows!(
        q8_0_avx2,
        "avx2,fma,f16c",
        32,
        1,
        q8_0_signed_weights,
        load_block,
        lanes_avx2,
        sum_lanes,
        false
    );
    dot_rows!(
        q4_1_vnni_256,
        "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
        16,
        1,
        q4_1_weights,
        load_block,
        lanes_vnni_256,
        sum_lanes,
        false
    );
    dot_rows!(
        q8_0_vnni_256,
        "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
        32,
        1,
        q8_0_offset_weights,
        load_block,
        lanes_vnni_256,
        sum_lanes,
        true
    );
    dot_rows!(
        q4_1_avx512,
        "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
        16,
        2,
        q4_1_pair,
        load_pair,
        lanes_vnni,
        sum_pair_lanes,
        false
    );
    dot_rows!(
        q8_0_avx512,
        "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
        32,
        2,
        q8_0_pair,
        load_pair,
        lanes_vnni,
        sum_pair_lanes,
        true
    );

    /// Q4_1's nibbles are unsigned: no signs to move.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn lanes_avx2_q4(w: [__m256i; 2], a: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(w[0], a), _mm256_set1_epi16(1))
    }

    macro_rules! dot_f16 {
        ($name:ident, $features:literal, $lanes:literal, $zero:ident, $load_w:expr, $load_x:ident,
         $fmadd:ident, $sum:expr) => {
            /// `R` F16 weight rows against `N` f32 activation rows: each weight vector is
            /// converted once for `N` rows, each activation vector loaded once for `R` rows.
            #[target_feature(enable = $features)]
            pub unsafe fn $name<const R: usize, const N: usize>(
                w: [&[u8]; R],
                x: [&[f32]; N],
            ) -> [[f32; N]; R] {
                let mut acc = [[$zero(); N]; R];
                let cols = x[0].len();
                for k in (0..cols).step_by($lanes) {
                    let wv: [_; R] = std::array::from_fn(|r| $load_w(w[r].as_ptr().add(2 * k)));
                    for j in 0..N {
                        let xv = $load_x(x[j].as_ptr().add(k));
                        for r in 0..R {
                            acc[r][j] = $fmadd(wv[r], xv, acc[r][j]);
                        }
                    }
                }
                acc.map(|row| row.map(|a| $sum(a)))
            }
        };
    }

    dot_f16!(
        f16_avx512,
        "avx512f",
        16,
        _mm512_setzero_ps,
        |p: *const u8| _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)),
        _mm512_loadu_ps,
        _mm512_fmadd_ps,
        |a| _mm512_reduce_add_ps(a)
    );
    dot_f16!(
        f16_avx2,
        "avx2,fma,f16c",
        8,
        _mm256_setzero_ps,
        |p: *const u8| _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
        _mm256_loadu_ps,
        _mm256_fmadd_ps,
        |a| hsum(a)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                ((herd_util::seeded::splitmix64(&mut s) >> 40) as f32 / 16_777_216.0) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn activation_rounding_is_ggmls() {
        // 0.5 steps round to even, the scale is f16(amax/127).
        let mut x = vec![0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -3.5;
        let row = quantize_row(&x);
        assert_eq!(row.q[0][1], 2);
        assert_eq!(row.q[0][2], -4);
        assert_eq!(row.d[0], 1.0);
        assert_eq!(row.s[0], f16::from_f32(127.0 + 2.0 - 4.0).to_f32());
    }

    #[test]
    fn simd_and_scalar_agree_with_dequantized_products() {
        assert!(QuantMatrix::new(GgmlDType::Q4_0, 1, 32, &[0; 18]).is_none());
        let dev = Device::Cpu;
        // 102 weight rows: 25 tiles of 4 and two single rows; 6 activation rows: one tile of 4
        // and two single rows; 11 blocks per row: a group of 8 and a partial group of 3 (an odd
        // block out of a 512-bit pair).
        let (rows, cols, n) = (102, 352, 6);
        let w = Tensor::from_vec(random(rows * cols, 1), (rows, cols), &dev).unwrap();
        let x = random(n * cols, 2);
        for (dtype, format) in [
            (GgmlDType::Q4_1, Format::Q4_1),
            (GgmlDType::Q8_0, Format::Q8_0),
            (GgmlDType::F16, Format::F16),
        ] {
            let q = QTensor::quantize(&w, dtype).unwrap();
            let m = QuantMatrix::new(dtype, rows, cols, &q.data().unwrap()).unwrap();
            let y = m.matmul(&x, n);
            let wd: Vec<Vec<f32>> = q.dequantize(&dev).unwrap().to_vec2().unwrap();
            let acts = match format {
                Format::F16 => Activations::F32 { x: &x, cols },
                _ => Activations::Q8(x.chunks_exact(cols).map(quantize_row).collect()),
            };
            for j in 0..n {
                let xj = &x[j * cols..(j + 1) * cols];
                let amax: Vec<f32> = xj
                    .chunks(BLOCK)
                    .map(|b| b.iter().fold(0f32, |m, v| m.max(v.abs())))
                    .collect();
                for r in 0..rows {
                    let got = y[j * rows + r];
                    let terms = wd[r].iter().zip(xj).map(|(a, b)| a * b);
                    let exact: f32 = terms.clone().sum();
                    let magnitude: f32 = terms.map(f32::abs).sum();
                    // Against the dequantized weights: rounding activations to 8 bits moves each
                    // by at most amax/254 of its block, and Q4_1's block sums are rounded to f16
                    // (|m| ≤ 1 here); F16 weights leave only the summation order.
                    let bound: f32 = match format {
                        Format::F16 => 1e-5 * magnitude,
                        _ => wd[r]
                            .iter()
                            .zip(xj)
                            .enumerate()
                            .map(|(i, (w, x))| w.abs() * amax[i / BLOCK] / 254.0 + x.abs() / 1024.0)
                            .sum(),
                    };
                    assert!(
                        (got - exact).abs() <= bound + 1e-5,
                        "{dtype:?} {j} {r}: {got} vs {exact} (bound {bound})"
                    );
                    // The scalar reference gives the dispatched (SIMD) result up to the order of
                    // the f32 sums.
                    let [[scalar]] = dot_tile::<1, 1>(Isa::Scalar, format, [m.row(r)], &acts, j);
                    assert!(
                        (scalar - got).abs() <= 1e-5 * (magnitude + 1.0),
                        "{dtype:?} {j} {r}: scalar {scalar} vs {got}"
                    );
                }
            }
            // For quantized weights the AVX-512 kernels give AVX2's sums bit for bit.
            let w0 = m.row(0);
            #[cfg(target_arch = "x86_64")]
            if isa() == Isa::Avx512 && format != Format::F16 {
                // Two rows take the 512-bit kernel, one row the 256-bit VNNI one.
                let avx2 = dot_tile::<1, 2>(Isa::Avx2, format, [w0], &acts, 0);
                assert_eq!(dot_tile::<1, 2>(Isa::Avx512, format, [w0], &acts, 0), avx2);
                let [[one]] = dot_tile::<1, 1>(Isa::Avx512, format, [w0], &acts, 0);
                assert_eq!(one, avx2[0][0]);
            }
        }
    }

    #[test]
    fn products_together_equal_products_alone() {
        let dev = Device::Cpu;
        let (cols, n) = (96, 5);
        let x = random(n * cols, 3);
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0, GgmlDType::F16] {
            let matrices: Vec<QuantMatrix> = [(7, 4), (12, 5), (3, 6)]
                .iter()
                .map(|&(rows, seed)| {
                    let w =
                        Tensor::from_vec(random(rows * cols, seed), (rows, cols), &dev).unwrap();
                    let q = QTensor::quantize(&w, dtype).unwrap();
                    QuantMatrix::new(dtype, rows, cols, &q.data().unwrap()).unwrap()
                })
                .collect();
            let together = QuantMatrix::matmul_many(&matrices.iter().collect::<Vec<_>>(), &x, n);
            for (m, y) in matrices.iter().zip(&together) {
                assert_eq!(*y, m.matmul(&x, n), "{dtype:?}");
            }
        }
    }

    #[test]
    fn simd_quantization_is_the_scalar_one() {
        let mut x = random(64 * BLOCK, 4);
        // Exact .5 ties after scaling (amax 127): 2.5 → 2, -3.5 → -4, 0.5 → 0.
        x[..4].copy_from_slice(&[127.0, 2.5, -3.5, 0.5]);
        x[BLOCK..2 * BLOCK].fill(0.0);
        // A corrupt model's activations: infinities, NaN, a denormal maximum (its inverse is
        // infinite). No panic, and the same bytes and sums from both paths.
        x[2 * BLOCK..2 * BLOCK + 3].copy_from_slice(&[f32::INFINITY, -1.0, f32::NAN]);
        x[3 * BLOCK..4 * BLOCK].fill(1e-40);
        x[3 * BLOCK + 1] = -1e-40;
        for block in x.chunks_exact(BLOCK) {
            let block: &[f32; BLOCK] = block.try_into().unwrap();
            #[cfg(target_arch = "x86_64")]
            if isa() != Isa::Scalar {
                // SAFETY: the CPU has AVX2 (checked by `isa()`).
                assert_eq!(
                    unsafe { simd::quantize_block(block) },
                    quantize_block_scalar(block)
                );
            }
            quantize_row(block);
        }
    }

    #[test]
    #[should_panic(expected = "rows of 32 inputs expected")]
    fn products_check_the_input_length() {
        let matrix = QuantMatrix::new(GgmlDType::Q8_0, 1, 32, &[0; 34]).unwrap();
        matrix.matmul(&[1.0; 31], 1);
    }
}

//! Matrix products with Q4_1 and Q8_0 weights, the arithmetic of llama.cpp's ggml: activations
//! are quantized to blocks of 32 bytes (scale `d = amax/127` stored as f16, values
//! `round_half_even(x · 127/amax)`, and for Q4_1's `q8_1` the block sum `s = f16(d · Σq)`); each
//! block then contributes `d_w · d_a · Σ q_w q_a` (+ `m_w · s_a` for Q4_1), with AVX-512 VNNI or
//! AVX2 on x86. Tested against ggml's own functions (`tests/ggml_quant_ops.rs`). F16 weights
//! are multiplied with f32 activations as they are (converted to f32 in registers, 16 at a time
//! with AVX-512), half the memory traffic of the dequantized f32 copy candle would make.
//!
//! Written here because candle 0.11 has no SIMD Q4_1 dot product (its scalar loop took 78% of
//! decode time) and its Q8_0 path processes one activation row at a time. The rounding is
//! ggml's, yet a 30-layer model's logits still differ from llama.cpp's by 0.1–0.6: every op before
//! a quantized matmul would have to round as ggml does (see docs/BENCHMARKS.md). Block layouts:
//! `block_q4_1` = f16 d, f16 m, 16 bytes of nibbles (low: elements 0–15, high: 16–31);
//! `block_q8_0` = f16 d, 32 × i8; F16 = 32 little-endian halves.
//!
//! The product runs in tiles of up to 4 weight rows × 4 activation rows, so that each weight
//! block is unpacked once for 4 activation rows and (for F16) each activation vector is loaded
//! once for 4 weight rows.

use candle_core::quantized::GgmlDType;
use half::f16;
use std::sync::Mutex;

/// Elements per quantization block.
pub const BLOCK: usize = 32;

/// Weight rows and activation rows per tile.
const TILE: usize = 4;

/// A weight matrix `[rows, cols]` in a ggml block format this module computes with.
#[derive(Debug, Clone)]
pub struct QuantMatrix {
    format: Format,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

/// The block formats herd computes with itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Q4_1,
    Q8_0,
    F16,
}

impl Format {
    /// Bytes of one block of 32 weights.
    fn bytes(self) -> usize {
        match self {
            Format::Q4_1 => 20,
            Format::Q8_0 => 34,
            Format::F16 => 64,
        }
    }
}

/// The activation rows of one product, in the form the weight format multiplies with.
enum Activations<'a> {
    /// Quantized rows (Q4_1 and Q8_0 weights).
    Q8(Vec<Q8Row>),
    /// Rows of `cols` floats, as given (F16 weights).
    F32 { x: &'a [f32], cols: usize },
}

/// Activations of one row in `q8_1` blocks: scale, ggml's `s` (unused by Q8_0 weights, whose
/// `q8_0` activations are otherwise the same), and the 32 values.
struct Q8Row {
    d: Vec<f32>,
    s: Vec<f32>,
    q: Vec<[i8; BLOCK]>,
}

fn f16_bits(bytes: &[u8]) -> f32 {
    f16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]])).to_f32()
}

/// ggml's `quantize_row_q8_1` (x86 path) of one activation row.
fn quantize_row(x: &[f32]) -> Q8Row {
    let blocks = x.len() / BLOCK;
    let mut row = Q8Row {
        d: Vec::with_capacity(blocks),
        s: Vec::with_capacity(blocks),
        q: Vec::with_capacity(blocks),
    };
    for block in x.chunks_exact(BLOCK) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut q = [0i8; BLOCK];
        let mut sum = 0i32;
        for (qi, &v) in q.iter_mut().zip(block) {
            let r = (v * id).round_ties_even() as i32;
            *qi = r as i8;
            sum += r;
        }
        let d16 = f16::from_f32(d);
        row.d.push(d16.to_f32());
        row.s.push(f16::from_f32(d * sum as f32).to_f32());
        row.q.push(q);
    }
    row
}

impl QuantMatrix {
    /// Wraps raw ggml data; `None` unless it is Q4_1, Q8_0 or F16 of that shape.
    pub fn new(dtype: GgmlDType, rows: usize, cols: usize, data: Vec<u8>) -> Option<QuantMatrix> {
        let format = match dtype {
            GgmlDType::Q4_1 => Format::Q4_1,
            GgmlDType::Q8_0 => Format::Q8_0,
            GgmlDType::F16 => Format::F16,
            _ => return None,
        };
        let expected = rows * cols / BLOCK * format.bytes();
        (cols.is_multiple_of(BLOCK) && data.len() == expected).then_some(QuantMatrix {
            format,
            rows,
            cols,
            data,
        })
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// `y = x Wᵀ` for `x` of shape `[n, cols]` (row-major); returns `[n, rows]`.
    pub fn matmul(&self, x: &[f32], n: usize) -> Vec<f32> {
        let acts = match self.format {
            Format::F16 => Activations::F32 { x, cols: self.cols },
            Format::Q4_1 | Format::Q8_0 => Activations::Q8(quantize_rows(x, self.cols)),
        };
        let row_bytes = self.cols / BLOCK * self.format.bytes();
        let row = |r: usize| &self.data[r * row_bytes..(r + 1) * row_bytes];
        let mut y = vec![0f32; n * self.rows];
        let out = Output {
            y: y.as_mut_ptr(),
            rows: self.rows,
        };
        // Work items are tiles of weight rows: a thread reuses its rows for every activation row
        // while they are in cache. They run on candle's worker pool, so herd's kernel and
        // candle's ops share the same threads instead of competing for the cores.
        let isa = isa();
        let tiles = self.rows.div_ceil(TILE);
        candle_core::utils::barrier_pool().execute_chunked(tiles, |range| {
            for tile in range {
                let first = tile * TILE;
                if first + TILE <= self.rows {
                    let w: [&[u8]; TILE] = std::array::from_fn(|i| row(first + i));
                    self.tile_rows(isa, w, &acts, n, first, &out);
                } else {
                    for r in first..self.rows {
                        self.tile_rows(isa, [row(r)], &acts, n, r, &out);
                    }
                }
            }
        });
        y
    }

    /// The `R` weight rows from `first` on against every activation row, `TILE` activation
    /// rows at a time.
    fn tile_rows<const R: usize>(
        &self,
        isa: Isa,
        w: [&[u8]; R],
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

/// The result `[n, rows]` of a product, written by the pool's threads.
struct Output {
    y: *mut f32,
    rows: usize,
}

// SAFETY: threads write through `Output` only in `put`, each to the weight rows of its own tiles
// (disjoint elements), while the vector it points into outlives the pool call.
unsafe impl Sync for Output {}

impl Output {
    /// Stores the `[R][N]` tile of weight rows from `first` and activation rows from `j`.
    fn put<const R: usize, const N: usize>(&self, j: usize, first: usize, tile: [[f32; N]; R]) {
        for (r, values) in tile.iter().enumerate() {
            for (i, &v) in values.iter().enumerate() {
                let index = (j + i) * self.rows + first + r;
                // SAFETY: `index` < n·rows (j + i < n, first + r < rows), and no other thread
                // writes this weight row (see `unsafe impl Sync`).
                unsafe { *self.y.add(index) = v };
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
    let slots: Vec<Mutex<Option<Q8Row>>> = (0..n).map(|_| Mutex::new(None)).collect();
    candle_core::utils::barrier_pool().execute_chunked(n, |range| {
        for j in range {
            let row = quantize_row(&x[j * cols..(j + 1) * cols]);
            *slots[j].lock().expect("each row is taken once") = Some(row);
        }
    });
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .expect("no quantizing thread panicked")
                .expect("every row was quantized")
        })
        .collect()
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

fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") && has!("f16c") {
            return if has!("avx512f") && has!("avx512vnni") && has!("avx512vl") {
                Isa::Avx512
            } else {
                Isa::Avx2
            };
        }
    }
    Isa::Scalar
}

/// `R` weight rows against the `N` activation rows from row `j` on.
fn dot_tile<const R: usize, const N: usize>(
    isa: Isa,
    format: Format,
    w: [&[u8]; R],
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
fn dot_rows<const N: usize>(isa: Isa, format: Format, w: &[u8], acts: [&Q8Row; N]) -> [f32; N] {
    // SAFETY: `isa()` checked that the CPU has the features each kernel needs.
    match (isa, format) {
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, Format::Q4_1) => unsafe { simd::q4_1_vnni(w, acts) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, Format::Q8_0) => unsafe { simd::q8_0_vnni(w, acts) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, Format::Q4_1) => unsafe { simd::q4_1_avx2(w, acts) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, Format::Q8_0) => unsafe { simd::q8_0_avx2(w, acts) },
        (Isa::Scalar, Format::Q4_1) => acts.map(|a| dot_q4_1_scalar(w, a)),
        (Isa::Scalar, Format::Q8_0) => acts.map(|a| dot_q8_0_scalar(w, a)),
        (_, Format::F16) => unreachable!("F16 weights multiply f32 activations"),
    }
}

/// Σ w x over an F16 row (the reference the SIMD kernels are tested against).
fn dot_f16_scalar(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(2)
        .zip(x)
        .map(|(h, &x)| f16_bits(h) * x)
        .sum()
}

/// Σ_blocks d_w d_a Σ q_w q_a + m_w s_a (the reference the SIMD kernel is tested against).
fn dot_q4_1_scalar(w: &[u8], a: &Q8Row) -> f32 {
    let mut acc = 0f32;
    let mut summs = 0f32;
    for (b, block) in w.chunks_exact(Format::Q4_1.bytes()).enumerate() {
        let (d, m, qs) = (
            f16_bits(&block[0..2]),
            f16_bits(&block[2..4]),
            &block[4..20],
        );
        let (low, high) = a.q[b].split_at(16);
        let sumi: i32 = qs
            .iter()
            .zip(low.iter().zip(high))
            .map(|(&q, (&x0, &x1))| (q & 0x0f) as i32 * x0 as i32 + (q >> 4) as i32 * x1 as i32)
            .sum();
        acc += d * a.d[b] * sumi as f32;
        summs += m * a.s[b];
    }
    acc + summs
}

/// Σ_blocks d_w d_a Σ q_w q_a (the reference the SIMD kernel is tested against).
fn dot_q8_0_scalar(w: &[u8], a: &Q8Row) -> f32 {
    let mut acc = 0f32;
    for (b, block) in w.chunks_exact(Format::Q8_0.bytes()).enumerate() {
        let sumi: i32 = block[2..34]
            .iter()
            .zip(&a.q[b])
            .map(|(&q, &x)| q as i8 as i32 * x as i32)
            .sum();
        acc += f16_bits(&block[0..2]) * a.d[b] * sumi as f32;
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod simd {
    //! x86 versions, lane for lane the arithmetic of ggml's `ggml_vec_dot_q4_1_q8_1`: per block,
    //! 8 i32 lanes each summing 4 byte products, turned to f32 and fused into the accumulator.
    //! AVX-512 VNNI's `vpdpbusd` forms exactly those lanes in one instruction; AVX2 needs
    //! `maddubs` + `madd`. `N` activation rows share each unpacked weight block.
    use std::arch::x86_64::*;

    use super::{f16_bits, Q8Row};

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

    /// The 32 weight nibbles of a block as bytes: low nibbles are elements 0..16, high 16..32.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn unpack(block: &[u8]) -> __m256i {
        let packed = _mm_loadu_si128(block[4..20].as_ptr() as *const __m128i);
        _mm256_and_si256(
            _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed),
            _mm256_set1_epi8(0x0f),
        )
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn lanes_avx2(qx: __m256i, qy: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(qx, qy), _mm256_set1_epi16(1))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
    unsafe fn lanes_vnni(qx: __m256i, qy: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), qx, qy)
    }

    /// A Q4_1 block: the nibbles as unsigned bytes against the activations, and (d, m).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn q4_1_block(block: &[u8], qy: __m256i) -> (__m256i, __m256i, f32, f32) {
        (
            unpack(block),
            qy,
            f16_bits(&block[0..2]),
            f16_bits(&block[2..4]),
        )
    }

    /// A Q8_0 block as ggml's `mul_sum_i8_pairs_float` feeds it: |w| (unsigned) against
    /// sign(a, w), and (d, 0).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn q8_0_block(block: &[u8], qy: __m256i) -> (__m256i, __m256i, f32, f32) {
        let qx = _mm256_loadu_si256(block[2..34].as_ptr() as *const __m256i);
        (
            _mm256_sign_epi8(qx, qx),
            _mm256_sign_epi8(qy, qx),
            f16_bits(&block[0..2]),
            0.0,
        )
    }

    macro_rules! dot_rows {
        ($name:ident, $features:literal, $lanes:ident, $block:ident, $bytes:expr) => {
            /// One weight row against `N` activation rows; each weight block is prepared once.
            #[target_feature(enable = $features)]
            pub unsafe fn $name<const N: usize>(w: &[u8], acts: [&Q8Row; N]) -> [f32; N] {
                let mut acc = [_mm256_setzero_ps(); N];
                let mut summs = [0f32; N];
                for (b, block) in w.chunks_exact($bytes).enumerate() {
                    for i in 0..N {
                        let a = acts[i];
                        let qy = _mm256_loadu_si256(a.q[b].as_ptr() as *const __m256i);
                        let (x, y, d, m) = $block(block, qy);
                        summs[i] += m * a.s[b];
                        let xy = _mm256_cvtepi32_ps($lanes(x, y));
                        acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d[b]), xy, acc[i]);
                    }
                }
                let mut out = [0f32; N];
                for i in 0..N {
                    out[i] = hsum(acc[i]) + summs[i];
                }
                out
            }
        };
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

    dot_rows!(q4_1_avx2, "avx2,fma", lanes_avx2, q4_1_block, 20);
    dot_rows!(
        q4_1_vnni,
        "avx2,fma,avx512vnni,avx512vl",
        lanes_vnni,
        q4_1_block,
        20
    );
    dot_rows!(q8_0_avx2, "avx2,fma", lanes_avx2, q8_0_block, 34);
    dot_rows!(
        q8_0_vnni,
        "avx2,fma,avx512vnni,avx512vl",
        lanes_vnni,
        q8_0_block,
        34
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
            .map(|_| ((crate::seeded::splitmix64(&mut s) >> 40) as f32 / 16_777_216.0) * 2.0 - 1.0)
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
        assert!(QuantMatrix::new(GgmlDType::Q4_0, 1, 32, vec![0; 18]).is_none());
        let dev = Device::Cpu;
        // 102 weight rows: 25 tiles of 4 and two single rows; 6 activation rows: one tile of 4
        // and two single rows.
        let (rows, cols, n) = (102, 96, 6);
        let w = Tensor::from_vec(random(rows * cols, 1), (rows, cols), &dev).unwrap();
        let x = random(n * cols, 2);
        for (dtype, format, tolerance) in [
            (GgmlDType::Q4_1, Format::Q4_1, 0.05),
            (GgmlDType::Q8_0, Format::Q8_0, 0.05),
            (GgmlDType::F16, Format::F16, 1e-4),
        ] {
            let q = QTensor::quantize(&w, dtype).unwrap();
            let m = QuantMatrix::new(dtype, rows, cols, q.data().unwrap().to_vec()).unwrap();
            let y = m.matmul(&x, n);
            let wd: Vec<Vec<f32>> = q.dequantize(&dev).unwrap().to_vec2().unwrap();
            for j in 0..n {
                for r in 0..rows {
                    let exact: f32 = wd[r]
                        .iter()
                        .zip(&x[j * cols..(j + 1) * cols])
                        .map(|(a, b)| a * b)
                        .sum();
                    // Only the 8-bit activation rounding (none for F16) separates the two.
                    assert!(
                        (y[j * rows + r] - exact).abs() < tolerance,
                        "{dtype:?} {j} {r}: {} vs {exact}",
                        y[j * rows + r]
                    );
                }
            }
            // The scalar reference gives the dispatched (SIMD) result up to summation order, and
            // for quantized weights VNNI gives AVX2's sums bit for bit.
            let acts = match format {
                Format::F16 => Activations::F32 { x: &x, cols },
                _ => Activations::Q8(x.chunks_exact(cols).map(quantize_row).collect()),
            };
            let w0 = &m.data[..cols / BLOCK * format.bytes()];
            let [[scalar]] = dot_tile::<1, 1>(Isa::Scalar, format, [w0], &acts, 0);
            assert!(
                (scalar - y[0]).abs() < 1e-4,
                "{dtype:?}: scalar {scalar} vs {}",
                y[0]
            );
            #[cfg(target_arch = "x86_64")]
            if isa() == Isa::Avx512 && format != Format::F16 {
                assert_eq!(
                    dot_tile::<1, 2>(Isa::Avx512, format, [w0], &acts, 0),
                    dot_tile::<1, 2>(Isa::Avx2, format, [w0], &acts, 0)
                );
            }
        }
    }
}

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
//! The product runs in tiles: 8 activation rows (4 without AVX-512) share each unpacked
//! quantized weight block, and for F16 4 weight rows share each activation vector (and 4
//! activation rows each converted weight vector).
//!
//! Parts: the weight formats, tiling and kernel dispatch (here); [`activations`] (ggml's
//! activation rounding and the layout the kernels read); [`scalar`] (the reference dot
//! products); `simd` (the AVX-512 VNNI and AVX2 kernels); `tests`.

use std::sync::OnceLock;

use candle_core::quantized::GgmlDType;
use half::f16;

use crate::kernel::SharedMut;
use activations::{padded, quantize_rows, slot, Q8Row};
use scalar::{dot_f16_scalar, dot_q4_1_scalar, dot_q8_0_scalar};

mod activations;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod simd;
#[cfg(test)]
mod tests;

/// Elements per quantization block.
pub const BLOCK: usize = 32;

/// Blocks whose sums are scaled together (lanes of one 256-bit f32 vector).
const GROUP: usize = 8;

/// Weight rows per tile (a work item of the pool).
const TILE: usize = 4;

/// Activation rows that share each unpacked quantized weight block with AVX-512: 8 halves the
/// unpacking of 4 (a 16-sequence decode step went from about 300 to 335–415 tok/s) and its 16
/// accumulators fit the 32 registers.
const QUANT_ACTS_AVX512: usize = 8;

/// Activation rows per tile otherwise: AVX2's 16 registers hold the accumulators of 4, and an
/// F16 tile's `TILE × 4` accumulators fill half of AVX-512's.
const ACTS: usize = 4;

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

fn f16_value(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
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

    /// The `R` weight rows from `first` on against every activation row,
    /// [`QUANT_ACTS_AVX512`] (quantized weights with AVX-512) or [`ACTS`] activation rows at a
    /// time.
    fn tile_rows<const R: usize>(
        &self,
        isa: Isa,
        w: [Row; R],
        acts: &Activations,
        n: usize,
        first: usize,
        out: &Output,
    ) {
        match (self.format, isa) {
            #[cfg(target_arch = "x86_64")]
            (Format::Q4_1 | Format::Q8_0, Isa::Avx512) => {
                self.tile_rows_by::<R, QUANT_ACTS_AVX512>(isa, w, acts, n, first, out)
            }
            _ => self.tile_rows_by::<R, ACTS>(isa, w, acts, n, first, out),
        }
    }

    /// [`QuantMatrix::tile_rows`], `N` activation rows at a time (then one at a time).
    fn tile_rows_by<const R: usize, const N: usize>(
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
            if j + N <= n {
                out.put(j, first, dot_tile::<R, N>(isa, self.format, w, acts, j));
                j += N;
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

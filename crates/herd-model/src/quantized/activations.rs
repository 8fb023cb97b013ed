//! Activations quantized as ggml quantizes them before a product with quantized weights:
//! `quantize_row_q8_1` blocks of 32 values with an f16 scale and (for Q4_1 weights) the
//! scaled block sum, laid out for the kernels (scales padded to whole groups, in lane order).

use half::f16;

#[cfg(target_arch = "x86_64")]
use super::simd;
use super::{isa, Isa, BLOCK, GROUP};
use crate::kernel::par_for_each;

/// Activations of one row in `q8_1` blocks: the 32 values of each block, and per block (padded
/// with zeros to a multiple of [`GROUP`], in [`slot`] order) the scale, ggml's `s` (unused by
/// Q8_0 weights, whose `q8_0` activations are otherwise the same), and `128 · Σq` (the
/// correction for Q8_0 weights offset to unsigned bytes by the VNNI kernel).
#[derive(Default)]
pub(super) struct Q8Row {
    pub(super) q: Vec<[i8; BLOCK]>,
    pub(super) d: Vec<f32>,
    pub(super) s: Vec<f32>,
    pub(super) offset: Vec<i32>,
}

/// Blocks rounded up to whole groups.
pub(super) fn padded(blocks: usize) -> usize {
    blocks.next_multiple_of(GROUP)
}

/// Where block `b`'s scale (minimum, activation scale, sum) is stored: within each group the
/// even blocks come first, then the odd ones, the order in which the AVX-512 kernel's lane sums
/// come out (pairs of blocks share a 512-bit register).
pub(super) fn slot(b: usize) -> usize {
    const SLOT: [usize; GROUP] = [0, 4, 1, 5, 2, 6, 3, 7];
    b - b % GROUP + SLOT[b % GROUP]
}

/// ggml's `quantize_row_q8_1` (x86 path) of one activation row.
pub(super) fn quantize_row(x: &[f32]) -> Q8Row {
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
pub(super) fn quantize_block_scalar(block: &[f32; BLOCK]) -> ([i8; BLOCK], f32, i32) {
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

/// Activation rows quantized on candle's worker pool (one row inline: a decode step).
pub(super) fn quantize_rows(x: &[f32], cols: usize) -> Vec<Q8Row> {
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

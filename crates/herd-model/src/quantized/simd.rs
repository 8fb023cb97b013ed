//! The x86 kernels. A block's integer sum Σ q_w q_a is formed in 8 i32 lanes of 4 byte
//! products each — in one instruction with AVX-512 VNNI's `vpdpbusd`, with `maddubs` +
//! `madd` on AVX2 — and [`GROUP`] blocks' lanes are then summed into one vector of 8 exact
//! block sums, scaled by their `d_w · d_a` and accumulated. `vpdpbusd` multiplies unsigned
//! by signed bytes: Q4_1's nibbles are unsigned already; Q8_0's weights are offset by 128
//! and `128 · Σ q_a` taken off again (exact). AVX2's `maddubs` would saturate on such bytes,
//! so there the Q8_0 weights' signs move onto the activations (ggml's way).
use std::arch::x86_64::*;

use super::activations::Q8Row;
use super::{Row, BLOCK, GROUP};

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

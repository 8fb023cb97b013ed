//! The scalar dot products: what runs on CPUs without AVX2, and the reference the SIMD kernels
//! are tested against.

use super::activations::{slot, Q8Row};
use super::{f16_value, Row};

/// Σ w x over an F16 row (the reference the SIMD kernels are tested against).
pub(super) fn dot_f16_scalar(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(2)
        .zip(x)
        .map(|(h, &x)| f16_value(u16::from_le_bytes([h[0], h[1]])) * x)
        .sum()
}

/// Σ_blocks d_w d_a Σ q_w q_a + m_w s_a (the reference the SIMD kernels are tested against).
pub(super) fn dot_q4_1_scalar(w: Row, a: &Q8Row) -> f32 {
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
pub(super) fn dot_q8_0_scalar(w: Row, a: &Q8Row) -> f32 {
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

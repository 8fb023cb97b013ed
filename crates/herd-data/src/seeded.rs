//! splitmix64, the generator herd seeds everything with (as `herd_model::seeded`, which this
//! crate does not depend on): shuffles, initial weights and hash finalisation.

/// Advances `state` and returns the next 64-bit value.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 64-bit FNV-1a of `bytes` (text keys for de-duplication; the same function as
/// `herd_model::seeded::fnv1a64`).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A uniform draw in `[-bound, bound)`.
pub fn uniform(state: &mut u64, bound: f32) -> f32 {
    ((splitmix64(state) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound
}

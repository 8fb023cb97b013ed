//! The deterministic randomness herd draws from: splitmix64 streams seeded by FNV-1a hashes of
//! names, so initial weights, data orders, shuffles and held-out splits are functions of the
//! seed alone (and `tools/fixtures/seeded_weights.py` rebuilds the same numbers in Python).

/// Advances `state` and returns the next 64-bit value of splitmix64.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 64-bit FNV-1a of `bytes`: the seed of a named stream, and the key of short texts in
/// de-duplication.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A uniform draw in `[-bound, bound)` from the top 24 bits of the next value.
pub fn uniform(state: &mut u64, bound: f32) -> f32 {
    ((splitmix64(state) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound
}

/// Shuffles `items` in place (Fisher–Yates from the last position down, each swap partner the
/// next value modulo the positions left), drawing from `state`.
pub fn shuffle<T>(items: &mut [T], state: &mut u64) {
    for i in (1..items.len()).rev() {
        let j = (splitmix64(state) % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_and_fnv1a_give_their_published_values() {
        // splitmix64 from state 0 (Vigna's reference), FNV-1a of "a" (the FNV test suite).
        let mut s = 0u64;
        assert_eq!(splitmix64(&mut s), 0xe220a8397b1dcdaf);
        assert_eq!(splitmix64(&mut s), 0x6e789e6aa1b965f4);
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let mut a: Vec<u32> = (0..100).collect();
        let mut b = a.clone();
        shuffle(&mut a, &mut 7);
        shuffle(&mut b, &mut 7);
        assert_eq!(a, b, "same seed, same order");
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(a, (0..100).collect::<Vec<_>>());
        let mut c: Vec<u32> = (0..100).collect();
        shuffle(&mut c, &mut 8);
        assert_ne!(a, c, "another seed, another order");
        // The first swap pairs position 99 with splitmix64(7) mod 100.
        let mut one: Vec<u32> = (0..100).collect();
        let mut state = 7;
        let j = (splitmix64(&mut state) % 100) as usize;
        one.swap(99, j);
        assert_eq!(a[99], one[99]);
    }

    #[test]
    fn uniform_stays_in_its_bounds() {
        let mut s = 1;
        for _ in 0..10_000 {
            let v = uniform(&mut s, 0.5);
            assert!((-0.5..0.5).contains(&v), "{v}");
        }
    }
}

//! CPython's `random.Random`: the Mersenne Twister (MT19937) seeded from an integer, and the
//! `sample` and `choices` draws built on it, bit for bit.
//!
//! lm-evaluation-harness picks few-shot examples with `random.Random(1234).sample(...)` and
//! bootstraps standard errors with `random.Random(i).choices(...)`; giving the same prompts and
//! the same errors means drawing the same numbers. No Rust crate reproduces CPython's seeding
//! (`init_by_array` over the seed's 32-bit words) and its `sample` algorithm together, so this
//! module does.

const N: usize = 624;
const M: usize = 397;

/// A CPython-compatible random generator.
#[derive(Clone)]
pub struct PyRandom {
    state: [u32; N],
    index: usize,
}

impl PyRandom {
    /// `random.Random(seed)` for a non-negative integer seed.
    pub fn new(seed: u64) -> PyRandom {
        // CPython keys the generator with the seed's 32-bit words, least significant first
        // (a single 0 word for seed 0).
        let mut key = vec![seed as u32];
        if seed >> 32 != 0 {
            key.push((seed >> 32) as u32);
        }
        let mut rng = PyRandom::from_word(19_650_218);
        rng.mix_key(&key);
        rng
    }

    /// MT19937's `init_genrand`.
    fn from_word(seed: u32) -> PyRandom {
        let mut state = [0u32; N];
        state[0] = seed;
        for i in 1..N {
            state[i] = 1_812_433_253u32
                .wrapping_mul(state[i - 1] ^ (state[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        PyRandom { state, index: N }
    }

    /// MT19937's `init_by_array` after `init_genrand(19650218)`.
    fn mix_key(&mut self, key: &[u32]) {
        let mt = &mut self.state;
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            mt[i] = (mt[i] ^ (mt[i - 1] ^ (mt[i - 1] >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            mt[i] = (mt[i] ^ (mt[i - 1] ^ (mt[i - 1] >> 30)).wrapping_mul(1_566_083_941))
                .wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
        }
        mt[0] = 0x8000_0000;
    }

    /// The next 32 random bits (`genrand_uint32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX: u32 = 0x9908_b0df;
        for k in 0..N {
            let y = (self.state[k] & UPPER) | (self.state[(k + 1) % N] & LOWER);
            let mag = if y & 1 == 1 { MATRIX } else { 0 };
            self.state[k] = self.state[(k + M) % N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    /// `random()`: a float in [0, 1) with 53 random bits.
    pub fn random(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67_108_864.0 + b) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `getrandbits(k)` for `k <= 32`.
    fn bits(&mut self, k: u32) -> u32 {
        if k == 0 {
            0
        } else {
            self.next_u32() >> (32 - k)
        }
    }

    /// `_randbelow(n)`: uniform in `0..n` by rejection on `n.bit_length()` bits.
    pub fn below(&mut self, n: usize) -> usize {
        let n = u32::try_from(n).expect("populations over 2^32 items are not drawn from");
        let k = 32 - n.leading_zeros();
        loop {
            let r = self.bits(k);
            if r < n {
                return r as usize;
            }
        }
    }

    /// `sample(population, k)` as indices into a population of `n`: `k` distinct indices in
    /// CPython's order (a partial shuffle of a pool for small populations, rejection of repeats
    /// for large ones).
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        assert!(k <= n, "sample larger than population");
        let mut setsize = 21usize;
        if k > 5 {
            // `4 ** ceil(log(k * 3, 4))`, computed in floats as CPython does.
            setsize += 4usize.pow((((k * 3) as f64).ln() / 4f64.ln()).ceil() as u32);
        }
        if n <= setsize {
            let mut pool: Vec<usize> = (0..n).collect();
            (0..k)
                .map(|i| {
                    let j = self.below(n - i);
                    let picked = pool[j];
                    pool[j] = pool[n - i - 1];
                    picked
                })
                .collect()
        } else {
            let mut selected = std::collections::HashSet::with_capacity(k);
            (0..k)
                .map(|_| loop {
                    let j = self.below(n);
                    if selected.insert(j) {
                        break j;
                    }
                })
                .collect()
        }
    }

    /// `choices(population, k=k)` as indices into a population of `n` (with replacement).
    pub fn choices(&mut self, n: usize, k: usize) -> Vec<usize> {
        let n_float = n as f64;
        (0..k)
            .map(|_| (self.random() * n_float).floor() as usize)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::PyRandom;

    // Expected values printed by CPython 3.11.7:
    //   r = random.Random(1234); [r.getrandbits(32) for _ in range(3)]
    //   r = random.Random(1234); r.random(), r.random()
    //   r = random.Random(1234); r.sample(range(10), 3), r.sample(range(1000), 6), r.sample(range(50), 9)
    //   random.Random(0).choices(range(7), k=10)
    //   r = random.Random(2**40 + 5); r.getrandbits(32), r.getrandbits(5)

    #[test]
    fn words_and_floats_match_cpython() {
        let mut r = PyRandom::new(1234);
        let words: Vec<u32> = (0..3).map(|_| r.next_u32()).collect();
        assert_eq!(words, [4150886329, 3342196574, 1892932127]);
        let mut r = PyRandom::new(1234);
        assert_eq!(r.random(), 0.9664535356921388);
        assert_eq!(r.random(), 0.4407325991753527);
        let mut r = PyRandom::new((1 << 40) + 5);
        assert_eq!(r.bits(32), 2166296868);
        assert_eq!(r.bits(5), 16);
    }

    #[test]
    fn sample_and_choices_match_cpython() {
        let mut r = PyRandom::new(1234);
        assert_eq!(r.sample(10, 3), [7, 1, 0]);
        assert_eq!(r.sample(1000, 6), [92, 932, 965, 961, 826, 596]);
        assert_eq!(r.sample(50, 9), [2, 42, 44, 5, 6, 22, 15, 1, 48]);
        let mut r = PyRandom::new(0);
        assert_eq!(r.choices(7, 10), [5, 5, 2, 1, 3, 2, 5, 2, 3, 4]);
    }
}

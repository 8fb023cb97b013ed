//! Near-duplicate documents by MinHash LSH (paper §3.1.1, "document-level de-duplication:
//! global MinHash"), with FineWeb's defaults: word 5-gram shingles of the normalised text
//! (lower case, punctuation removed, whitespace collapsed), 14 bands of 8 hashes. Two
//! documents that agree on every hash of some band are duplicates; duplicates are clustered
//! (union–find) and the first document of each cluster is kept. A pair with Jaccard similarity
//! `s` is caught with probability `1 − (1 − s⁸)¹⁴`: 0.92 at 0.8, 0.05 at 0.5.
//!
//! Hash functions are `(a·x + b) mod (2⁶¹ − 1)` of a 64-bit shingle hash, with `a`, `b` drawn
//! from the seed, so signatures are the same on every machine and every run.

use serde::{Deserialize, Serialize};

const MERSENNE_61: u64 = (1 << 61) - 1;

/// Shingle size and banding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MinHashConfig {
    /// Words per shingle.
    pub ngram: usize,
    /// Bands.
    pub bands: usize,
    /// Hashes per band.
    pub rows: usize,
    /// Seed of the hash functions.
    pub seed: u64,
}

impl Default for MinHashConfig {
    fn default() -> Self {
        MinHashConfig {
            ngram: 5,
            bands: 14,
            rows: 8,
            seed: 1,
        }
    }
}

impl MinHashConfig {
    /// Checks the settings: shingles of at least one word (0 would make every document the
    /// same empty shingle), and bands and rows that keep the signatures (8 bytes × bands × rows
    /// per document) and the band keys of a whole task in memory.
    pub fn validate(&self) -> Result<(), String> {
        use herd_util::check::within;
        within("ngram", self.ngram, 1, 64)?;
        within("bands", self.bands, 1, 256)?;
        within("rows", self.rows, 1, 512)?;
        within("bands × rows", self.bands * self.rows, 1, 16_384)
    }
}

/// Lower case, letters, digits and single spaces only.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = true;
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            out.push(c);
            space = false;
        } else if !space {
            out.push(' ');
            space = true;
        }
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

/// 64-bit FNV-1a, then a splitmix64 finaliser (FNV alone mixes its high bits poorly).
fn hash64(bytes: &[u8]) -> u64 {
    let h = herd_util::seeded::fnv1a64(bytes);
    let mut state = h;
    herd_util::seeded::splitmix64(&mut state)
}

/// `a·x + b mod 2⁶¹ − 1`.
fn affine(a: u64, b: u64, x: u64) -> u64 {
    let v = u128::from(a) * u128::from(x % MERSENNE_61) + u128::from(b);
    (v % u128::from(MERSENNE_61)) as u64
}

/// Computes signatures with fixed hash functions.
pub struct MinHasher {
    config: MinHashConfig,
    params: Vec<(u64, u64)>,
}

impl MinHasher {
    /// The hash functions of `config`.
    pub fn new(config: MinHashConfig) -> MinHasher {
        let mut state = config.seed;
        let mut draw = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            hash64(&state.to_le_bytes()) % (MERSENNE_61 - 1) + 1
        };
        let params = (0..config.bands * config.rows)
            .map(|_| (draw(), draw()))
            .collect();
        MinHasher { config, params }
    }

    /// The shingle hashes of `text` (one shingle for texts shorter than `ngram` words).
    fn shingles(&self, text: &str) -> Vec<u64> {
        let normalized = normalize(text);
        let words: Vec<&str> = normalized.split(' ').filter(|w| !w.is_empty()).collect();
        let n = self.config.ngram.max(1).min(words.len().max(1));
        let mut hashes: Vec<u64> = words
            .windows(n)
            .map(|g| hash64(g.join(" ").as_bytes()))
            .collect();
        hashes.sort_unstable();
        hashes.dedup();
        hashes
    }

    /// The signature of `text`: `bands × rows` minima.
    pub fn signature(&self, text: &str) -> Vec<u64> {
        let shingles = self.shingles(text);
        self.params
            .iter()
            .map(|&(a, b)| {
                shingles
                    .iter()
                    .map(|&x| affine(a, b, x))
                    .min()
                    .unwrap_or(u64::MAX)
            })
            .collect()
    }

    /// Bands of the signature (keys per document).
    pub fn bands(&self) -> usize {
        self.config.bands
    }

    /// Per band, one hash of its rows (the LSH bucket key).
    pub fn band_keys(&self, signature: &[u64]) -> Vec<u64> {
        signature
            .chunks(self.config.rows)
            .map(|band| {
                let bytes: Vec<u8> = band.iter().flat_map(|v| v.to_le_bytes()).collect();
                hash64(&bytes)
            })
            .collect()
    }
}

/// The share of equal entries of two signatures: an estimate of the Jaccard similarity.
pub fn estimated_jaccard(a: &[u64], b: &[u64]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
}

/// Union–find over document indices.
struct Clusters {
    parent: Vec<usize>,
}

impl Clusters {
    fn root(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    /// Joins the clusters of `a` and `b`; the smaller index stays the root (the kept one).
    fn join(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.root(a), self.root(b));
        let (keep, other) = (ra.min(rb), ra.max(rb));
        self.parent[other] = keep;
    }
}

/// For each document, whether it is kept: the first of its cluster of near-duplicates.
/// `band_keys` holds each document's `bands` keys one document after the other. Documents that
/// share a key in some band are joined: per band, (key, document) pairs are sorted and runs of
/// one key joined — 16 bytes per document at a time besides the keys themselves, where a hash
/// map over all bands needed ~40 bytes per document and band.
pub fn keep_first_of_clusters(band_keys: &[u64], bands: usize) -> Vec<bool> {
    let docs = band_keys.len() / bands.max(1);
    let mut clusters = Clusters {
        parent: (0..docs).collect(),
    };
    let mut pairs: Vec<(u64, u32)> = Vec::with_capacity(docs);
    for band in 0..bands {
        pairs.clear();
        pairs.extend((0..docs).map(|d| (band_keys[d * bands + band], d as u32)));
        pairs.sort_unstable();
        for run in pairs.chunk_by(|a, b| a.0 == b.0) {
            for &(_, doc) in &run[1..] {
                clusters.join(run[0].1 as usize, doc as usize);
            }
        }
    }
    (0..docs).map(|i| clusters.root(i) == i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A text of `n` distinct pseudo-words drawn from `seed`.
    fn text(seed: u64, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                format!(
                    "w{:x}",
                    hash64(&(seed * 1_000_003 + i as u64).to_le_bytes()) % 50_000
                )
            })
            .collect()
    }

    #[test]
    fn signatures_estimate_jaccard() {
        let h = MinHasher::new(MinHashConfig {
            ngram: 1,
            bands: 64,
            rows: 8,
            seed: 3,
        });
        // 400 words; the second text shares the first 300 of them: J = 300 / 500 = 0.6.
        let a = text(1, 400);
        let mut b = a[..300].to_vec();
        b.extend(text(2, 100));
        let j = estimated_jaccard(&h.signature(&a.join(" ")), &h.signature(&b.join(" ")));
        assert!((j - 0.6).abs() < 0.08, "{j}");
    }

    #[test]
    fn near_duplicates_are_clustered_and_distinct_texts_kept() {
        let h = MinHasher::new(MinHashConfig::default());
        let base = text(7, 300);
        let mut edited = base.clone();
        edited[150] = "changed".into(); // one word in 300: 5-gram Jaccard ≈ 0.97
        let docs = [
            base.join(" "),
            text(8, 300).join(" "),
            edited.join(" "),
            base.join("  ").to_uppercase() + "!!!", // the same after normalisation
            text(9, 300).join(" "),
        ];
        let keys: Vec<u64> = docs
            .iter()
            .flat_map(|d| h.band_keys(&h.signature(d)))
            .collect();
        assert_eq!(
            keep_first_of_clusters(&keys, h.config.bands),
            [true, true, false, false, true]
        );
    }

    #[test]
    fn normalisation_drops_case_and_punctuation() {
        assert_eq!(
            normalize("  Hello, WORLD!\n\tIt's  2024. "),
            "hello world it s 2024"
        );
    }
}

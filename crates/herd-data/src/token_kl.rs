//! Token-distribution outliers (paper §3.1.1: "we use Kullback-Leibler divergence to filter out
//! documents containing excessive numbers of outlier tokens compared to the training corpus
//! distribution"). Two passes over a bucket of documents: [`TokenDistribution::add`] counts the
//! bucket's tokens, then [`TokenDistribution::kl`] gives each document's KL(p‖q) in nats, p the
//! document's token distribution and q the bucket's (add-one smoothed). A document is an outlier
//! when its divergence is above [`TokenKlConfig::max_kl`] or, without one, above the bucket's
//! median plus `mads` median absolute deviations ([`outlier_threshold`]).
//!
//! Tokens are lower-cased words (whitespace-separated, stripped of punctuation), hashed: no
//! tokenizer file is needed and the measure does not depend on a vocabulary. KL falls with
//! document length (a short text's few words are all "rare" against the corpus), so documents
//! under `min_words` are not judged — the Gopher length rules handle them.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

/// The stage's settings (`kind = "token_kl"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenKlConfig {
    /// Documents with fewer words are kept without a judgement.
    pub min_words: usize,
    /// A fixed threshold in nats; `None` takes it from the bucket's divergences.
    pub max_kl: Option<f64>,
    /// Median absolute deviations above the median that make an outlier.
    pub mads: f64,
}

impl Default for TokenKlConfig {
    fn default() -> TokenKlConfig {
        TokenKlConfig {
            min_words: 50,
            max_kl: None,
            mads: 4.0,
        }
    }
}

impl TokenKlConfig {
    /// Checks the settings: a finite, non-negative threshold or deviation count.
    pub fn validate(&self) -> Result<(), String> {
        use herd_util::check::{at_least, finite_at_least};
        at_least("min_words", self.min_words, 1)?;
        if let Some(max) = self.max_kl {
            finite_at_least("max_kl", max, 0.0)?;
        }
        finite_at_least("mads", self.mads, 0.0)
    }
}

/// A token's key: the hash of the lower-cased word without surrounding punctuation.
fn tokens(text: &str) -> impl Iterator<Item = u64> + '_ {
    text.split_whitespace().filter_map(|w| {
        let w = w.trim_matches(|c: char| !c.is_alphanumeric());
        (!w.is_empty()).then(|| herd_util::seeded::fnv1a64(w.to_lowercase().as_bytes()))
    })
}

/// Token counts of a bucket of documents.
#[derive(Debug, Default, Clone)]
pub struct TokenDistribution {
    counts: HashMap<u64, u64>,
    total: u64,
}

impl TokenDistribution {
    /// Counts one document's tokens.
    pub fn add(&mut self, text: &str) {
        for t in tokens(text) {
            *self.counts.entry(t).or_default() += 1;
            self.total += 1;
        }
    }

    /// KL(p‖q) of `text`'s tokens p against the bucket's q, in nats; `None` under `min_words`.
    pub fn kl(&self, text: &str, min_words: usize) -> Option<f64> {
        // Ordered by token, not by a hash map's (randomly seeded) order: the same document gets
        // the same divergence, to the bit, in every run (exact resume depends on it).
        let mut doc: BTreeMap<u64, u64> = BTreeMap::new();
        let mut n = 0u64;
        for t in tokens(text) {
            *doc.entry(t).or_default() += 1;
            n += 1;
        }
        if (n as usize) < min_words.max(1) {
            return None;
        }
        let denominator = (self.total + self.counts.len() as u64 + 1) as f64;
        let kl = doc
            .iter()
            .map(|(&t, &c)| {
                let p = c as f64 / n as f64;
                let q = (self.counts.get(&t).copied().unwrap_or(0) + 1) as f64 / denominator;
                p * (p / q).ln()
            })
            .sum();
        Some(kl)
    }
}

/// The divergence above which a document is an outlier: `median + mads × MAD` of `kls`, plus
/// a relative 1e-9 so that divergences equal up to rounding (MAD 0) are never told apart.
pub fn outlier_threshold(kls: &[f64], mads: f64) -> f64 {
    if kls.is_empty() {
        return f64::INFINITY;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        if v.len().is_multiple_of(2) {
            (v[m - 1] + v[m]) / 2.0
        } else {
            v[m]
        }
    };
    let mut sorted = kls.to_vec();
    let mid = median(&mut sorted);
    let mut deviations: Vec<f64> = kls.iter().map(|k| (k - mid).abs()).collect();
    mid + mads * median(&mut deviations) + 1e-9 * mid.abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_matches_the_closed_form_and_flags_the_odd_document_out() {
        let mut q = TokenDistribution::default();
        q.add("a a b");
        // p = {a: 1/2, c: 1/2}; q(a) = 3/6, q(c) = 1/6 (add-one over 3 tokens, 2 types, +1).
        let kl = q.kl("A, c!", 1).unwrap();
        let expected = 0.5 * (0.5f64 / 0.5).ln() + 0.5 * (0.5f64 / (1.0 / 6.0)).ln();
        assert!((kl - expected).abs() < 1e-12, "{kl} vs {expected}");
        assert_eq!(q.kl("a", 2), None);

        let prose = |i: usize| {
            format!("the river ran past the old mill and the town slept in the valley {i} while the rain fell")
        };
        let mut bucket = TokenDistribution::default();
        let mut docs: Vec<String> = (0..30).map(prose).collect();
        docs.push("zx9 qq7 vv8 kk2 zx9 qq7 vv8 kk2 ww1 yy3 zz4 xx5 rr6 tt7 uu8 oo9".repeat(2));
        docs.iter().for_each(|d| bucket.add(d));
        let kls: Vec<f64> = docs.iter().map(|d| bucket.kl(d, 10).unwrap()).collect();
        let threshold = outlier_threshold(&kls, 4.0);
        let outliers: Vec<usize> = (0..docs.len()).filter(|&i| kls[i] > threshold).collect();
        assert_eq!(outliers, [30]);
    }
}

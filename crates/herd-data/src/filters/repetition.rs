//! Gopher's repetition rules (Rae et al. 2021, table A1) — the "duplicated n-gram coverage
//! ratio" filter of the Llama 3 paper: documents made of repeated lines, paragraphs or word
//! n-grams are removed. Character shares are of the whole text's length, as in datatrove's
//! `GopherRepetitionFilter`:
//!
//! - duplicate lines / paragraphs: share of lines (paragraphs) that repeat an earlier one, and
//!   their characters' share;
//! - top n-gram (n = 2, 3, 4): characters of the most frequent n-gram times its count;
//! - duplicated n-grams (n = 5 … 10): characters of the words in n-grams that repeat an
//!   earlier n-gram (each word counted once).
//!
//! N-grams are keyed by 64-bit hashes combined from their words' hashes (each word hashed once)
//! in FxHash sets: hashing every window's strings made this the slowest stage of a web pipeline.

use rustc_hash::{FxHashMap, FxHashSet};

use serde::{Deserialize, Serialize};

use super::{words, Verdict};

/// The thresholds (Gopher's values by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GopherRepetition {
    /// Most repeated lines, as a share of lines.
    pub max_duplicate_lines: f64,
    /// Most repeated paragraphs, as a share of paragraphs.
    pub max_duplicate_paragraphs: f64,
    /// Most characters in repeated lines.
    pub max_duplicate_line_chars: f64,
    /// Most characters in repeated paragraphs.
    pub max_duplicate_paragraph_chars: f64,
    /// Per n (2, 3, 4): most characters covered by the most frequent n-gram.
    pub max_top_ngram_chars: Vec<(usize, f64)>,
    /// Per n (5 … 10): most characters covered by repeated n-grams.
    pub max_duplicate_ngram_chars: Vec<(usize, f64)>,
}

impl Default for GopherRepetition {
    fn default() -> Self {
        GopherRepetition {
            max_duplicate_lines: 0.3,
            max_duplicate_paragraphs: 0.3,
            max_duplicate_line_chars: 0.2,
            max_duplicate_paragraph_chars: 0.2,
            max_top_ngram_chars: vec![(2, 0.2), (3, 0.18), (4, 0.16)],
            max_duplicate_ngram_chars: vec![
                (5, 0.15),
                (6, 0.14),
                (7, 0.13),
                (8, 0.12),
                (9, 0.11),
                (10, 0.10),
            ],
        }
    }
}

/// (elements that repeat an earlier one, their characters).
fn duplicates<'a>(items: impl Iterator<Item = &'a str>) -> (usize, usize) {
    let mut seen = FxHashSet::default();
    let (mut n, mut chars) = (0, 0);
    for item in items {
        if !seen.insert(item) {
            n += 1;
            chars += item.chars().count();
        }
    }
    (n, chars)
}

/// The drop for `items` (lines or paragraphs) whose repeats exceed `(share of items, share of
/// the text's characters)`, with the reason for each.
fn repeated(
    items: &[&str],
    length: f64,
    (max_share, max_chars): (f64, f64),
    (share_reason, chars_reason): (&'static str, &'static str),
) -> Option<Verdict> {
    let (n, chars) = duplicates(items.iter().copied());
    if n as f64 / items.len().max(1) as f64 > max_share {
        return Some(Verdict::Drop(share_reason));
    }
    (chars as f64 / length > max_chars).then_some(Verdict::Drop(chars_reason))
}

/// The words of a text and a 64-bit hash of each: n-grams are keyed by combining their words'
/// hashes, so each window costs n multiplications instead of hashing n strings.
struct Words<'a> {
    words: Vec<&'a str>,
    hashes: Vec<u64>,
}

impl<'a> Words<'a> {
    fn new(text: &'a str) -> Words<'a> {
        let words = words(text);
        let hashes = words
            .iter()
            .map(|w| herd_util::seeded::fnv1a64(w.as_bytes()))
            .collect();
        Words { words, hashes }
    }

    /// The key of the `n`-gram starting at word `i`.
    fn gram(&self, i: usize, n: usize) -> u64 {
        self.hashes[i..i + n].iter().fold(0u64, |key, &h| {
            (key.rotate_left(5) ^ h).wrapping_mul(0x517c_c1b7_2722_0a95)
        })
    }

    /// Positions where an `n`-gram starts.
    fn starts(&self, n: usize) -> std::ops::Range<usize> {
        0..(self.words.len() + 1).saturating_sub(n)
    }
}

/// Characters of the most frequent `n`-gram times its count (ties: the smallest n-gram in
/// text order).
fn top_ngram_chars(words: &Words, n: usize) -> usize {
    let mut counts: FxHashMap<u64, (usize, usize)> = FxHashMap::default();
    for i in words.starts(n) {
        counts.entry(words.gram(i, n)).or_insert((0, i)).0 += 1;
    }
    let gram = |first: usize| &words.words[first..first + n];
    counts
        .values()
        .max_by_key(|&&(count, first)| (count, std::cmp::Reverse(gram(first))))
        .filter(|(count, _)| *count > 1)
        .map_or(0, |&(count, first)| {
            gram(first).iter().map(|w| w.chars().count()).sum::<usize>() * count
        })
}

/// Characters of the words inside `n`-grams that repeat an earlier one (each word once).
fn duplicate_ngram_chars(words: &Words, n: usize) -> usize {
    let mut seen = FxHashSet::default();
    let mut counted = vec![false; words.words.len()];
    for i in words.starts(n) {
        if !seen.insert(words.gram(i, n)) {
            counted[i..i + n].iter_mut().for_each(|c| *c = true);
        }
    }
    words
        .words
        .iter()
        .zip(&counted)
        .filter(|(_, &c)| c)
        .map(|(w, _)| w.chars().count())
        .sum()
}

impl GopherRepetition {
    /// Checks the thresholds: shares between 0 and 1, n-gram lengths from 1 to 32.
    pub fn validate(&self) -> Result<(), String> {
        use herd_util::check::{finite_within, within};
        for (key, share) in [
            ("max_duplicate_lines", self.max_duplicate_lines),
            ("max_duplicate_paragraphs", self.max_duplicate_paragraphs),
            ("max_duplicate_line_chars", self.max_duplicate_line_chars),
            (
                "max_duplicate_paragraph_chars",
                self.max_duplicate_paragraph_chars,
            ),
        ] {
            finite_within(key, share, 0.0, 1.0)?;
        }
        for (key, list) in [
            ("max_top_ngram_chars", &self.max_top_ngram_chars),
            ("max_duplicate_ngram_chars", &self.max_duplicate_ngram_chars),
        ] {
            for &(n, share) in list {
                within(&format!("{key} n"), n, 1, 32)?;
                finite_within(key, share, 0.0, 1.0)?;
            }
        }
        Ok(())
    }

    /// Applies the rules to `text`, the first failing one giving the reason.
    pub fn check(&self, text: &str) -> Verdict {
        let length = text.chars().count().max(1) as f64;
        let paragraphs: Vec<&str> = text
            .split("\n\n")
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        if let Some(v) = repeated(
            &paragraphs,
            length,
            (
                self.max_duplicate_paragraphs,
                self.max_duplicate_paragraph_chars,
            ),
            ("repetition_paragraphs", "repetition_paragraph_chars"),
        ) {
            return v;
        }
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if let Some(v) = repeated(
            &lines,
            length,
            (self.max_duplicate_lines, self.max_duplicate_line_chars),
            ("repetition_lines", "repetition_line_chars"),
        ) {
            return v;
        }
        let words = Words::new(text);
        for &(n, max) in &self.max_top_ngram_chars {
            if top_ngram_chars(&words, n) as f64 / length > max {
                return Verdict::Drop("repetition_top_ngram");
            }
        }
        for &(n, max) in &self.max_duplicate_ngram_chars {
            if duplicate_ngram_chars(&words, n) as f64 / length > max {
                return Verdict::Drop("repetition_duplicate_ngrams");
            }
        }
        Verdict::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_the_definitions() {
        assert_eq!(duplicates(["a", "bb", "a", "bb", "a"].into_iter()), (3, 4));
        let w = Words::new("a b a b a b c");
        // "a b" occurs 3 times: 2 chars × 3.
        assert_eq!(top_ngram_chars(&w, 2), 6);
        // 5-grams: "a b a b a" then "b a b a b", then "a b a b c": none repeats.
        assert_eq!(duplicate_ngram_chars(&w, 5), 0);
        let w = Words::new("x y z w v x y z w v q");
        // The second "x y z w v" repeats the first: its 5 words count.
        assert_eq!(duplicate_ngram_chars(&w, 5), 5);
    }

    #[test]
    fn repeated_boilerplate_is_dropped_and_prose_kept() {
        let g = GopherRepetition::default();
        let prose = "Rivers carry silt to the plains. Farmers wait for the spring flood.\n\n\
            In autumn the water falls back and leaves the fields dark and rich.\n\n\
            Boats come up from the sea with salt, cloth and news of distant towns.";
        assert_eq!(g.check(prose), Verdict::Keep);
        let menu = "Home\nAbout us\nContact\nHome\nAbout us\nContact\nA line of text here.";
        assert_eq!(g.check(menu), Verdict::Drop("repetition_lines"));
        let spam = "buy cheap watches now ".repeat(30);
        assert_eq!(g.check(&spam), Verdict::Drop("repetition_top_ngram"));
    }
}

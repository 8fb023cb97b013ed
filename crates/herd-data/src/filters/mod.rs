//! Document filters of the curation pipeline (paper §3.1.1, "heuristic filtering"): each looks
//! at a document's text alone and keeps it or says why not.
//!
//! - [`gopher`]: Gopher's quality rules (word counts and lengths, symbols, bullets, ellipses,
//!   alphabetic words, stop words; Rae et al. 2021, A.1.1);
//! - [`repetition`]: Gopher's repetition rules — duplicated lines, paragraphs and n-grams
//!   (the "duplicated n-gram coverage ratio" the Llama 3 paper names);
//! - [`dirty_words`]: counts of words from a block list (LDNOOBW, as C4).

pub mod dirty_words;
pub mod gopher;
pub mod repetition;

/// A filter's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The document passes.
    Keep,
    /// The document is removed, for this reason (a short stable name, counted in reports).
    Drop(&'static str),
}

/// The words of a text: its whitespace-separated tokens.
pub fn words(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

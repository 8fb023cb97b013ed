//! tiktoken BPE rank files (`tokenizer.model` of Llama 3): one `base64(token) rank` per line.
//! The BPE itself is tiktoken's own core, vendored by the `tiktoken-rs` crate, so merges are
//! exactly tiktoken's.

use std::path::Path;

use base64::Engine;
use rustc_hash::FxHashMap;
use tiktoken_rs::CoreBPE;

use crate::error::{Error, Result};

/// Token bytes → rank, as read from a rank file.
pub type Ranks = FxHashMap<Vec<u8>, u32>;

/// Reads a tiktoken rank file; a bad line is reported with its number.
pub fn read_ranks(path: &Path) -> Result<Ranks> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut ranks = Ranks::default();
    let mut seen = std::collections::HashSet::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let bad = |what: &str| Error::format(path, format!("line {}: {what}: {line:?}", n + 1));
        let (token, rank) = line
            .split_once(' ')
            .ok_or_else(|| bad("expected `base64 rank`"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(token)
            .map_err(|_| bad("bad base64"))?;
        let rank: u32 = rank.trim().parse().map_err(|_| bad("bad rank"))?;
        if !seen.insert(rank) {
            return Err(bad("a rank given to two tokens"));
        }
        if ranks.insert(bytes, rank).is_some() {
            return Err(bad("duplicate token"));
        }
    }
    if ranks.is_empty() {
        return Err(Error::format(
            path,
            "no ranks in file (is this a tiktoken tokenizer.model?)",
        ));
    }
    Ok(ranks)
}

/// Builds tiktoken's BPE from ranks, special tokens and the pre-tokenizer split pattern.
pub fn core_bpe(ranks: Ranks, specials: &[(String, u32)], pattern: &str) -> Result<CoreBPE> {
    let specials: FxHashMap<String, u32> = specials.iter().cloned().collect();
    CoreBPE::new(ranks, specials, pattern)
        .map_err(|e| Error::Other(format!("cannot build BPE: {e}")))
}

//! Meta's Llama 3 tokenizer (`llama_models/llama3/tokenizer.py`): tiktoken BPE over 128,000 ranks,
//! Meta's split pattern, and 256 special tokens from id 128,000. Like the reference, text is cut
//! into 400,000-character chunks and then into pieces of at most 25,000 consecutive whitespace or
//! non-whitespace characters before BPE; the ids depend on those cuts.

use std::collections::HashSet;
use std::path::Path;

use tiktoken_rs::CoreBPE;

use crate::error::Result;
use crate::tiktoken::{core_bpe, read_ranks};

/// Meta's pre-tokenizer split pattern.
pub const PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Characters per call to the BPE (`TIKTOKEN_MAX_ENCODE_CHARS`).
const MAX_ENCODE_CHARS: usize = 400_000;
/// Longest run of whitespace or of non-whitespace handed to the BPE (`MAX_NO_WHITESPACES_CHARS`).
const MAX_RUN_CHARS: usize = 25_000;

/// Number of regular (BPE) tokens in Meta's `tokenizer.model`; special tokens follow.
pub const NUM_BASE_TOKENS: u32 = 128_000;
/// Number of special tokens.
pub const NUM_SPECIAL_TOKENS: u32 = 256;

/// Names of the special tokens with a role in Llama 3.x. Their ids follow the BPE ranks
/// (128,000 + index in Meta's tokenizer; after the last rank in a vocabulary herd trains).
pub mod special {
    pub const BEGIN_OF_TEXT: &str = "<|begin_of_text|>";
    pub const END_OF_TEXT: &str = "<|end_of_text|>";
    pub const FINETUNE_RIGHT_PAD: &str = "<|finetune_right_pad_id|>";
    pub const STEP: &str = "<|step_id|>";
    pub const START_HEADER: &str = "<|start_header_id|>";
    pub const END_HEADER: &str = "<|end_header_id|>";
    pub const EOM: &str = "<|eom_id|>";
    pub const EOT: &str = "<|eot_id|>";
    pub const PYTHON_TAG: &str = "<|python_tag|>";
    pub const IMAGE: &str = "<|image|>";
}

/// The 256 special token strings in id order from 128,000, as in `llama_models` 0.3.
pub fn special_tokens() -> Vec<String> {
    let named = [
        special::BEGIN_OF_TEXT,
        special::END_OF_TEXT,
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>",
        special::FINETUNE_RIGHT_PAD,
        special::STEP,
        special::START_HEADER,
        special::END_HEADER,
        special::EOM,
        special::EOT,
        special::PYTHON_TAG,
        special::IMAGE,
    ];
    let mut tokens: Vec<String> = named.iter().map(|s| s.to_string()).collect();
    let reserved = NUM_SPECIAL_TOKENS as usize - tokens.len();
    tokens.extend((0..reserved).map(|i| format!("<|reserved_special_token_{}|>", 2 + i)));
    tokens
}

/// Meta's Llama 3 tokenizer: tiktoken BPE ranks, Meta's split pattern and the 256 special
/// tokens after the last rank. Meta's `tokenizer.model` has 128,000 ranks; the vocabularies
/// `herd tokenizer train` writes have the same layout with fewer.
pub struct Llama3Tokenizer {
    bpe: CoreBPE,
    /// The ranks, kept to write the tokenizer in HF's format.
    ranks: crate::tiktoken::Ranks,
    specials: Vec<String>,
    base: u32,
}

impl Llama3Tokenizer {
    /// Loads Meta's `tokenizer.model` (a tiktoken rank file).
    pub fn from_file(path: &Path) -> Result<Llama3Tokenizer> {
        let ranks = read_ranks(path)?;
        Self::from_ranks(ranks, path)
    }

    /// Builds the tokenizer from BPE ranks, which must be `0..n` with every single byte among
    /// them; special tokens take the ids after the last rank.
    pub fn from_ranks(ranks: crate::tiktoken::Ranks, path: &Path) -> Result<Llama3Tokenizer> {
        let base = ranks.len() as u32;
        if let Some(rank) = ranks.values().find(|&&r| r >= base) {
            return Err(crate::Error::format(
                path,
                format!("rank {rank} but only {base} ranks: ranks must be 0..{base}"),
            ));
        }
        if let Some(byte) = (0..=255u8).find(|b| !ranks.contains_key(&vec![*b])) {
            return Err(crate::Error::format(
                path,
                format!("byte {byte:#04x} has no rank: every single byte needs one"),
            ));
        }
        let specials = special_tokens();
        let with_ids: Vec<(String, u32)> = specials
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), base + i as u32))
            .collect();
        Ok(Llama3Tokenizer {
            bpe: core_bpe(ranks.clone(), &with_ids, PATTERN)?,
            ranks,
            specials,
            base,
        })
    }

    /// Encodes `text`; special-token text becomes special ids only when `allow_special` is set
    /// (Meta's `allowed_special="all"`), otherwise it is encoded as plain text.
    pub fn encode(&self, text: &str, allow_special: bool) -> Vec<u32> {
        let allowed: HashSet<&str> = if allow_special {
            self.specials.iter().map(String::as_str).collect()
        } else {
            HashSet::new()
        };
        let mut ids = Vec::new();
        for chunk in char_chunks(text, MAX_ENCODE_CHARS) {
            for piece in split_runs(chunk, MAX_RUN_CHARS) {
                let (piece_ids, _) = self
                    .bpe
                    .encode(piece, &allowed)
                    .expect("the split pattern matches any text");
                ids.extend(piece_ids);
            }
        }
        ids
    }

    /// The bytes of `ids` (special tokens as their text); `None` for an id outside the vocabulary.
    pub fn decode_bytes(&self, ids: &[u32]) -> Option<Vec<u8>> {
        self.bpe.decode_bytes(ids).ok()
    }

    /// Number of ids (regular plus special).
    pub fn vocab_size(&self) -> usize {
        (self.base + NUM_SPECIAL_TOKENS) as usize
    }

    /// The HF `tokenizer.json` giving this tokenizer's ids (see [`crate::hf_files`]).
    pub fn hf_tokenizer_json(&self) -> std::result::Result<serde_json::Value, String> {
        crate::hf_files::llama3_tokenizer_json(&self.ranks, &self.specials)
    }

    /// The id of a special token string.
    pub fn special_id(&self, token: &str) -> Option<u32> {
        self.specials
            .iter()
            .position(|s| s == token)
            .map(|i| self.base + i as u32)
    }
}

/// Slices of at most `max` characters.
fn char_chunks(text: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest.char_indices().nth(max).map_or(rest.len(), |(i, _)| i);
        let (chunk, tail) = rest.split_at(end);
        rest = tail;
        Some(chunk)
    })
}

/// Python's `str.isspace` (Rust's `char::is_whitespace` lacks U+001C..U+001F).
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Meta's `_split_whitespaces_or_nonwhitespaces`: cuts so that no piece holds more than `max`
/// consecutive whitespace or non-whitespace characters.
fn split_runs(text: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut run_len = 0;
    let mut run_is_space = text.chars().next().is_some_and(is_python_space);
    let mut start = 0;
    for (i, c) in text.char_indices() {
        let space = is_python_space(c);
        if space != run_is_space {
            run_len = 1;
            run_is_space = space;
        } else {
            run_len += 1;
            if run_len > max {
                pieces.push(&text[start..i]);
                start = i;
                run_len = 1;
            }
        }
    }
    pieces.push(&text[start..]);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_tokens_have_metas_ids() {
        let tokens = special_tokens();
        assert_eq!(tokens.len(), 256);
        assert_eq!(tokens[9], special::EOT);
        assert_eq!(tokens[10], special::PYTHON_TAG);
        assert_eq!(tokens[255], "<|reserved_special_token_245|>");
    }

    #[test]
    fn runs_are_cut_like_meta() {
        assert_eq!(split_runs("aaaaa  b", 2), vec!["aa", "aa", "a  b"]);
        assert_eq!(split_runs("", 2), vec![""]);
        assert_eq!(
            char_chunks("héllo", 2).collect::<Vec<_>>(),
            vec!["hé", "ll", "o"]
        );
    }
}

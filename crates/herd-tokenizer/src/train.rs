//! Training a byte-level BPE vocabulary in Meta's format (`herd tokenizer train`): text is split
//! with Meta's Llama 3 pattern, BPE merges are learned on the bytes of the pieces, and the
//! result is a tiktoken rank file; Meta's 256 special tokens follow the last rank when it is
//! loaded. The tiny and small pretraining recipes use vocabularies of 8,192 and 32,768 ids
//! made this way, so a 128K output layer does not dwarf a small model.
//!
//! Merges are learned by the `tokenizers` crate's BPE trainer (HF's); it works on strings, so
//! bytes go through GPT-2's byte → character table and come back to bytes for the rank file.

use base64::Engine;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::Trainer;

use crate::error::{Error, Result};
use crate::llama3::{NUM_SPECIAL_TOKENS, PATTERN};
use crate::tiktoken::Ranks;

/// Learns BPE ranks from `texts` so that ranks plus Meta's 256 special tokens make at most
/// `vocab_size` ids (fewer when the text runs out of pairs seen `min_frequency` times).
pub fn train_ranks<I, S>(texts: I, vocab_size: usize, min_frequency: u64) -> Result<Ranks>
where
    I: Iterator<Item = S> + Send,
    S: AsRef<str> + Send,
{
    let specials = NUM_SPECIAL_TOKENS as usize;
    if vocab_size < 256 + specials {
        return Err(Error::Other(format!(
            "vocabulary size {vocab_size} is too small: 256 bytes and {specials} special tokens need {}",
            256 + specials
        )));
    }
    let split = fancy_regex::Regex::new(PATTERN).expect("Meta's pattern compiles");
    let chars = byte_chars();
    let mut trainer = BpeTrainer::builder()
        .vocab_size(vocab_size - specials)
        .min_frequency(min_frequency)
        .initial_alphabet(chars.iter().copied().collect())
        .show_progress(false)
        .build();
    trainer
        .feed(texts, |text| {
            split
                .find_iter(text)
                .map(|piece| Ok(piece?.as_str().bytes().map(|b| chars[b as usize]).collect()))
                .collect()
        })
        .map_err(|e| Error::Other(format!("BPE training failed: {e}")))?;
    let mut bpe = BPE::default();
    trainer
        .train(&mut bpe)
        .map_err(|e| Error::Other(format!("BPE training failed: {e}")))?;
    let mut ranks = Ranks::default();
    for (token, id) in bpe.get_vocab() {
        let bytes = token
            .chars()
            .map(|c| chars.iter().position(|&b| b == c).map(|b| b as u8))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| Error::Other(format!("trained token {token:?} is not byte-level")))?;
        ranks.insert(bytes, id);
    }
    Ok(ranks)
}

/// The text of a tiktoken rank file (`base64(token) rank` per line, by rank).
pub fn ranks_file_text(ranks: &Ranks) -> String {
    let mut by_rank: Vec<(&Vec<u8>, &u32)> = ranks.iter().collect();
    by_rank.sort_by_key(|(_, rank)| **rank);
    by_rank
        .iter()
        .map(|(bytes, rank)| {
            let token = base64::engine::general_purpose::STANDARD.encode(bytes);
            format!("{token} {rank}\n")
        })
        .collect()
}

/// GPT-2's reversible byte → character table: printable Latin-1 bytes map to themselves, the
/// others to the characters from U+0100 on.
fn byte_chars() -> [char; 256] {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut chars = ['\0'; 256];
    let mut next = 256;
    for (b, c) in chars.iter_mut().enumerate() {
        let b = b as u32;
        *c = if printable(b) {
            char::from_u32(b).expect("Latin-1")
        } else {
            next += 1;
            char::from_u32(next - 1).expect("below U+0200")
        };
    }
    chars
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llama3::Llama3Tokenizer;

    fn corpus() -> Vec<String> {
        let line = "The quick brown fox jumps over the lazy dog. Numbers 12345 and    spaces!\n";
        (0..50)
            .map(|i| format!("{i}: {}", line.repeat(3)))
            .collect()
    }

    #[test]
    fn trained_vocabulary_round_trips_and_compresses() {
        let ranks = train_ranks(corpus().into_iter(), 600, 2).unwrap();
        // The corpus runs out of pairs before 344 merges: the vocabulary is what was learned.
        let n = ranks.len() as u32;
        assert!(n > 300 && n <= 600 - 256, "{n} ranks");
        let text = ranks_file_text(&ranks);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.model");
        std::fs::write(&path, text).unwrap();
        let tokenizer = Llama3Tokenizer::from_file(&path).unwrap();
        assert_eq!(tokenizer.vocab_size(), n as usize + 256);
        assert_eq!(tokenizer.special_id("<|begin_of_text|>"), Some(n));
        let sample = "The lazy fox jumps over 12345 dogs — ünïcödé too.";
        let ids = tokenizer.encode(sample, false);
        assert_eq!(tokenizer.decode_bytes(&ids).unwrap(), sample.as_bytes());
        let seen = "The quick brown fox jumps over the lazy dog.";
        assert!(
            tokenizer.encode(seen, false).len() <= 12,
            "frequent words merge"
        );
    }

    #[test]
    fn training_is_deterministic() {
        let a = ranks_file_text(&train_ranks(corpus().into_iter(), 600, 1).unwrap());
        let b = ranks_file_text(&train_ranks(corpus().into_iter(), 600, 1).unwrap());
        assert_eq!(a, b);
    }

    #[test]
    fn too_small_a_vocabulary_is_refused() {
        let err = train_ranks(corpus().into_iter(), 300, 1).unwrap_err();
        assert!(err.to_string().contains("too small"), "{err}");
    }

    #[test]
    fn byte_table_is_a_bijection() {
        let chars = byte_chars();
        let unique: std::collections::HashSet<char> = chars.iter().copied().collect();
        assert_eq!(unique.len(), 256);
        assert_eq!(chars[b'A' as usize], 'A');
        assert_eq!(chars[b' ' as usize], 'Ġ');
    }
}

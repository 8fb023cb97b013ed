//! Dirty-word counting (paper §3.1.1, as C4 does with the LDNOOBW list): a document with at
//! least `max_matches` words or phrases of the list (whole words, case-insensitive) is
//! removed. The English list is bundled (`assets/ldnoobw-en.txt`, CC BY 4.0); other languages'
//! lists can be given as files.

use std::collections::HashSet;
use std::path::Path;

use crate::error::{Error, Result};

use super::Verdict;

/// LDNOOBW's English list.
const ENGLISH: &str = include_str!("../../assets/ldnoobw-en.txt");

/// A block list of words and phrases.
#[derive(Debug, Clone)]
pub struct DirtyWords {
    words: HashSet<String>,
    /// Longest phrase, in words.
    longest: usize,
    /// Matches at which a document is dropped (C4: 1).
    pub max_matches: usize,
}

impl DirtyWords {
    /// The bundled English list.
    pub fn english(max_matches: usize) -> DirtyWords {
        Self::from_list(ENGLISH, max_matches)
    }

    /// A list from a file, one word or phrase per line.
    pub fn from_file(path: &Path, max_matches: usize) -> Result<DirtyWords> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Ok(Self::from_list(&text, max_matches))
    }

    fn from_list(list: &str, max_matches: usize) -> DirtyWords {
        let words: HashSet<String> = list
            .lines()
            .map(|l| l.trim().to_lowercase())
            .filter(|l| !l.is_empty())
            .collect();
        let longest = words
            .iter()
            .map(|w| w.split_whitespace().count())
            .max()
            .unwrap_or(1);
        DirtyWords {
            words,
            longest,
            max_matches: max_matches.max(1),
        }
    }

    /// Words and phrases of the list in `text`.
    pub fn count(&self, text: &str) -> usize {
        let tokens: Vec<String> = text
            .split(|c: char| !c.is_alphanumeric() && c != '\'' && c != '-')
            .filter(|t| !t.is_empty())
            .map(str::to_lowercase)
            .collect();
        let mut n = 0;
        for i in 0..tokens.len() {
            for len in 1..=self.longest.min(tokens.len() - i) {
                if self.words.contains(&tokens[i..i + len].join(" ")) {
                    n += 1;
                }
            }
        }
        n
    }

    /// Drops a document with `max_matches` or more matches.
    pub fn check(&self, text: &str) -> Verdict {
        if self.count(text) >= self.max_matches {
            Verdict::Drop("dirty_words")
        } else {
            Verdict::Keep
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_words_and_phrases_are_counted() {
        let list = DirtyWords::from_list("badword\ntwo words\n", 2);
        assert_eq!(
            list.count("A BadWord here, and two words there; badwords not."),
            2
        );
        assert_eq!(list.check("one badword only"), Verdict::Keep);
        assert_eq!(
            list.check("badword and badword"),
            Verdict::Drop("dirty_words")
        );
        assert!(DirtyWords::english(1).words.len() > 300);
    }
}

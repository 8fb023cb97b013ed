//! Line-level de-duplication (paper §3.1.1): within a bucket of documents (30M in the paper),
//! lines that occur more than 6 times are removed from every document — navigation menus,
//! cookie warnings and other boilerplate that survive URL and document de-duplication. It
//! takes two passes over the bucket: [`LineCounts::add`] every document, then
//! [`LineCounts::strip`] each one. Lines are compared by a 64-bit hash of their trimmed text;
//! blank lines are kept.

use std::collections::HashMap;

/// Occurrences of each line in a bucket.
#[derive(Debug, Default, Clone)]
pub struct LineCounts {
    counts: HashMap<u64, u32>,
}

/// A line's key.
fn key(line: &str) -> u64 {
    herd_util::seeded::fnv1a64(line.trim().as_bytes())
}

impl LineCounts {
    /// Counts the lines of one document of the bucket.
    pub fn add(&mut self, text: &str) {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let count = self.counts.entry(key(line)).or_default();
            *count = count.saturating_add(1);
        }
    }

    /// `text` without the lines seen more than `max_occurrences` times in the bucket, and how
    /// many lines were removed.
    pub fn strip(&self, text: &str, max_occurrences: u32) -> (String, usize) {
        let mut out = String::with_capacity(text.len());
        let mut removed = 0;
        for line in text.split_inclusive('\n') {
            let content = line.trim_end_matches(['\n', '\r']);
            let frequent = !content.trim().is_empty()
                && self.counts.get(&key(content)).copied().unwrap_or(0) > max_occurrences;
            if frequent {
                removed += 1;
            } else {
                out.push_str(line);
            }
        }
        (out, removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_over_the_threshold_are_removed_everywhere() {
        let mut counts = LineCounts::default();
        let docs: Vec<String> = (0..8)
            .map(|i| format!("Home | About | Contact\nArticle {i} text.\n\nAccept cookies\n"))
            .collect();
        let mut docs = docs;
        docs[0].push_str("Accept cookies\n"); // 9 cookie lines, 8 menu lines
        for d in &docs {
            counts.add(d);
        }
        let (text, removed) = counts.strip(&docs[0], 8);
        assert_eq!(
            (text.as_str(), removed),
            ("Home | About | Contact\nArticle 0 text.\n\n", 2)
        );
        let (text, removed) = counts.strip(&docs[3], 6);
        assert_eq!((text.as_str(), removed), ("Article 3 text.\n\n", 2));
    }
}

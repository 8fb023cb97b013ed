//! URL de-duplication (paper §3.1.1: "we keep only the most recent version for pages
//! corresponding to each URL"): of the documents with the same URL, the one with the latest
//! crawl date is kept — the first read among equal dates, and a dated copy before undated ones.
//! Documents without a URL are kept. URLs are compared without their `#fragment`, with scheme
//! and host in lower case. One pass records, per URL, the best document so far; the decisions
//! come out as one flag per document (a byte each).

use std::collections::HashMap;

/// The newest document of each URL seen so far.
#[derive(Debug, Default)]
pub struct NewestByUrl {
    best: HashMap<u64, (Option<String>, usize)>,
    keep: Vec<bool>,
}

/// The URL as compared: no fragment, scheme and host lower case.
pub fn url_key(url: &str) -> u64 {
    let url = url.trim();
    let url = url.split_once('#').map_or(url, |(u, _)| u);
    let (scheme_and_host, path) = match url.find("://") {
        Some(s) => {
            let end = url[s + 3..]
                .find(['/', '?'])
                .map_or(url.len(), |e| s + 3 + e);
            url.split_at(end)
        }
        None => ("", url),
    };
    let key = format!("{}{path}", scheme_and_host.to_ascii_lowercase());
    herd_util::seeded::fnv1a64(key.as_bytes())
}

impl NewestByUrl {
    /// Records the next document (documents are numbered in the order they are added).
    pub fn add(&mut self, url: Option<&str>, date: Option<&str>) {
        let index = self.keep.len();
        let Some(url) = url else {
            self.keep.push(true);
            return;
        };
        let date = date.map(str::trim).filter(|d| !d.is_empty());
        let best = self.best.entry(url_key(url)).or_insert((None, index));
        let newer = date.is_some_and(|d| best.0.as_deref() < Some(d));
        if best.1 == index || newer {
            if best.1 != index {
                self.keep[best.1] = false;
            }
            *best = (date.map(String::from), index);
            self.keep.push(true);
        } else {
            self.keep.push(false);
        }
    }

    /// Per document added, whether it is kept.
    pub fn into_decisions(self) -> Vec<bool> {
        self.keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_copy_of_each_url_is_kept() {
        let docs = [
            (
                Some("https://A.example/page#top"),
                Some("2023-01-01T00:00:00Z"),
            ),
            (Some("https://a.example/page"), Some("2024-03-01T00:00:00Z")), // newest of the page
            (Some("https://a.example/page"), Some("2022-01-01T00:00:00Z")),
            (None, None),                           // no URL: kept
            (Some("https://a.example/PAGE"), None), // another path (case matters after the host)
            (Some("https://b.example/"), None),     // undated, first
            (Some("https://b.example/"), None),     // undated, later: the first stays
            (Some("https://a.example/page"), Some("2024-03-01T00:00:00Z")), // a tie: first stays
            (Some("https://c.example/"), None),
            (Some("https://c.example/"), Some("2020-01-01")), // dated beats undated
        ];
        let mut newest = NewestByUrl::default();
        for (url, date) in docs {
            newest.add(url, date);
        }
        assert_eq!(
            newest.into_decisions(),
            [false, true, false, true, true, true, false, false, false, true]
        );
    }
}

//! URL block lists (paper §3.1.1: "domains … known to contain adult content"): a document whose
//! URL's host, or any domain above it, is on a list (UT1's `domains` files, one per line, plain
//! or gzipped) is removed. WARC documents carry their URL as their id; other documents are
//! kept unless their id is a URL.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};
use crate::filters::Verdict;

/// Blocked domains.
#[derive(Debug, Default, Clone)]
pub struct UrlFilter {
    domains: HashSet<String>,
}

/// The host of an `http(s)://` URL, lower case, without port or `www.`.
pub fn host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority
        .rsplit('@')
        .next()?
        .split(':')
        .next()?
        .to_ascii_lowercase();
    let host = host.strip_prefix("www.").unwrap_or(&host).to_string();
    (!host.is_empty()).then_some(host)
}

impl UrlFilter {
    /// Reads domain lists (`#` comments and blank lines ignored).
    pub fn from_files(paths: &[impl AsRef<Path>]) -> Result<UrlFilter> {
        let mut filter = UrlFilter::default();
        for path in paths {
            let path = path.as_ref();
            let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            let mut text = String::new();
            let read = if path.extension().is_some_and(|e| e == "gz") {
                flate2::read::MultiGzDecoder::new(file).read_to_string(&mut text)
            } else {
                std::io::BufReader::new(file).read_to_string(&mut text)
            };
            read.map_err(|e| Error::io(path, e))?;
            filter.add(&text);
        }
        Ok(filter)
    }

    /// Adds the domains of a list's text.
    pub fn add(&mut self, list: &str) {
        self.domains.extend(
            list.lines()
                .map(|l| l.trim().trim_start_matches("www.").to_ascii_lowercase())
                .filter(|l| !l.is_empty() && !l.starts_with('#')),
        );
    }

    /// Drops a URL whose host or a parent domain is listed.
    pub fn check(&self, url: &str) -> Verdict {
        let Some(host) = host(url) else {
            return Verdict::Keep;
        };
        let mut domain = host.as_str();
        loop {
            if self.domains.contains(domain) {
                return Verdict::Drop("url_blocklist");
            }
            match domain.split_once('.') {
                Some((_, parent)) if parent.contains('.') => domain = parent,
                _ => return Verdict::Keep,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_parent_domains_are_blocked() {
        let mut f = UrlFilter::default();
        f.add("# adult\nbad.example\nwww.worse.test\n");
        assert_eq!(
            f.check("https://bad.example/page"),
            Verdict::Drop("url_blocklist")
        );
        assert_eq!(
            f.check("http://cdn.img.BAD.example:8080/x"),
            Verdict::Drop("url_blocklist")
        );
        assert_eq!(
            f.check("https://user@www.worse.test?q=1"),
            Verdict::Drop("url_blocklist")
        );
        assert_eq!(f.check("https://notbad.example/"), Verdict::Keep);
        assert_eq!(f.check("https://example/"), Verdict::Keep);
        assert_eq!(f.check("books/alice.txt"), Verdict::Keep);
        assert_eq!(host("HTTPS://www.Site.org:443/a"), Some("site.org".into()));
    }

    #[test]
    fn ut1_lists_are_read() {
        let Some(list) = herd_util::testing::shared("data/filters/ut1-sample/dating.domains.gz")
        else {
            return;
        };
        let f = UrlFilter::from_files(&[list]).unwrap();
        assert!(f.domains.len() > 6000);
        assert_eq!(
            f.check("https://www.100-best-dating-sites.com/top"),
            Verdict::Drop("url_blocklist")
        );
    }
}

//! WARC files (ISO 28500; what Common Crawl publishes), plain or as concatenated gzip members:
//! each `response` record whose HTTP payload is HTML becomes a document — its id the
//! `WARC-Target-URI` (also its URL; `WARC-Date` its date), its text the page's markup decoded from its declared encoding (the
//! `extract` stage turns it into main text). A chunked transfer encoding is undone. `request`,
//! `metadata`, `warcinfo` and `revisit` records (a revisit has no payload) and non-HTML responses
//! are skipped silently; a malformed record (bad header, short body, bad chunking, a block over
//! [`MAX_RECORD_BYTES`]) is reported as a bad record with its byte offset and skipped, and a
//! stream that breaks off (a truncated `.warc.gz`) is reported where it broke.

use std::io::{BufRead, Read};
use std::path::Path;

use crate::error::{Error, Result};
use crate::reader::{BadRecord, Document};

/// The largest record block read into memory (Common Crawl truncates payloads at 1 MiB); a
/// larger one is skipped and reported.
pub const MAX_RECORD_BYTES: u64 = 64 << 20;

/// Header lines of a WARC or HTTP head, up to the blank line.
fn read_head(input: &mut dyn BufRead, consumed: &mut u64) -> std::io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = input.read_until(b'\n', &mut line)?;
        *consumed += n as u64;
        if n == 0 {
            return Ok((!lines.is_empty()).then_some(lines));
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if text.is_empty() {
            if lines.is_empty() {
                continue; // blank lines between records
            }
            return Ok(Some(lines));
        }
        lines.push(text);
    }
}

/// The value of header `name` (case-insensitive).
fn header<'a>(lines: &'a [String], name: &str) -> Option<&'a str> {
    lines.iter().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// An HTTP response's body: after its head, de-chunked when `Transfer-Encoding: chunked`.
/// `None` when it is not an HTML response.
fn html_payload(block: &[u8]) -> std::result::Result<Option<Vec<u8>>, String> {
    let mut cursor = std::io::Cursor::new(block);
    let mut consumed = 0;
    let head = read_head(&mut cursor, &mut consumed)
        .map_err(|e| e.to_string())?
        .ok_or("empty HTTP response")?;
    if !head.first().is_some_and(|l| l.starts_with("HTTP/")) {
        return Err("the response block is not an HTTP response".into());
    }
    let html =
        header(&head, "Content-Type").is_none_or(|t| t.to_ascii_lowercase().contains("html"));
    if !html {
        return Ok(None);
    }
    let body = &block[consumed as usize..];
    let chunked =
        header(&head, "Transfer-Encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
    if !chunked {
        return Ok(Some(body.to_vec()));
    }
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let Some(rest) = body.get(at..).filter(|r| !r.is_empty()) else {
            // The data ended after a whole chunk without the closing empty chunk: what was
            // sent is all there, so it is kept (as warcio does).
            return Ok(Some(out));
        };
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunked body: no chunk size line")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("chunked body: bad chunk size {size_text:?}"))?;
        at += line_end + 2;
        if size == 0 {
            return Ok(Some(out));
        }
        let chunk = at
            .checked_add(size)
            .and_then(|end| body.get(at..end))
            .ok_or("chunked body: chunk longer than the record")?;
        out.extend_from_slice(chunk);
        at = at + size + 2;
    }
}

/// Calls `each` with every HTML response of a WARC stream; malformed records go to `bad`.
pub fn read_warc(
    mut input: Box<dyn BufRead>,
    path: &Path,
    bad: &mut Vec<BadRecord>,
    each: &mut dyn FnMut(Document) -> Result<()>,
) -> Result<()> {
    let mut offset = 0u64;
    loop {
        let start = offset;
        let at = || format!("{}@{start}", path.display());
        let broken = |e: std::io::Error, bad: &mut Vec<BadRecord>| {
            bad.push(BadRecord {
                at: at(),
                reason: format!("the file cannot be read on ({e}): truncated or corrupt"),
            });
        };
        let head = match read_head(&mut input, &mut offset) {
            Ok(Some(head)) => head,
            Ok(None) => return Ok(()),
            Err(e) => {
                broken(e, bad);
                return Ok(());
            }
        };
        if !head[0].starts_with("WARC/") {
            return Err(Error::format(
                path,
                format!(
                    "byte {start}: not a WARC record ({:?}); the rest of the file cannot be read",
                    head[0]
                ),
            ));
        }
        let Some(length) = header(&head, "Content-Length").and_then(|v| v.parse::<u64>().ok())
        else {
            return Err(Error::format(
                path,
                format!("byte {start}: WARC record without Content-Length"),
            ));
        };
        if length > MAX_RECORD_BYTES {
            match std::io::copy(&mut (&mut input).take(length), &mut std::io::sink()) {
                Ok(skipped) => offset += skipped,
                Err(e) => {
                    broken(e, bad);
                    return Ok(());
                }
            }
            bad.push(BadRecord {
                at: at(),
                reason: format!(
                    "a record of {length} bytes, over the {MAX_RECORD_BYTES}-byte limit: skipped"
                ),
            });
            continue;
        }
        // The capacity grows with what is read, not with what the header claims.
        let mut block = Vec::with_capacity(length.min(1 << 16) as usize);
        let read = match (&mut input).take(length).read_to_end(&mut block) {
            Ok(read) => read,
            Err(e) => {
                broken(e, bad);
                return Ok(());
            }
        };
        offset += read as u64;
        if (read as u64) < length {
            bad.push(BadRecord {
                at: at(),
                reason: format!("record cut short: {read} of {length} bytes"),
            });
            return Ok(());
        }
        if header(&head, "WARC-Type") != Some("response") {
            continue;
        }
        let url = header(&head, "WARC-Target-URI").unwrap_or("").to_string();
        match html_payload(&block) {
            Ok(Some(html)) => each(Document {
                id: url.clone(),
                text: crate::charset::decode(&html),
                url: Some(url),
                date: header(&head, "WARC-Date").map(String::from),
            })?,
            Ok(None) => {}
            Err(reason) => bad.push(BadRecord { at: at(), reason }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: &str, uri: &str, block: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "WARC/1.0\r\nWARC-Type: {kind}\r\nWARC-Target-URI: {uri}\r\nContent-Length: {}\r\n\r\n",
            block.len()
        )
        .into_bytes();
        r.extend_from_slice(block);
        r.extend_from_slice(b"\r\n\r\n");
        r
    }

    fn read(bytes: Vec<u8>) -> (Vec<Document>, Vec<BadRecord>) {
        let (mut docs, mut bad) = (Vec::new(), Vec::new());
        read_warc(
            Box::new(std::io::Cursor::new(bytes)),
            Path::new("t.warc"),
            &mut bad,
            &mut |d| {
                docs.push(d);
                Ok(())
            },
        )
        .unwrap();
        (docs, bad)
    }

    #[test]
    fn html_responses_are_read_and_the_rest_skipped_or_reported() {
        let mut warc = record("warcinfo", "", b"software: test");
        warc.extend(record("request", "http://a/", b"GET / HTTP/1.1\r\n\r\n"));
        warc.extend(record(
            "response",
            "http://a/",
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hello</p>",
        ));
        warc.extend(record("response", "http://b/", b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n<p>Hi\r\n5\r\n!</p>\r\n0\r\n\r\n"));
        warc.extend(record(
            "response",
            "http://c/img",
            b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\n\x89PNG",
        ));
        warc.extend(record("revisit", "http://a/", b"HTTP/1.1 200 OK\r\n\r\n"));
        warc.extend(record(
            "response",
            "http://d/",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ));
        let (docs, bad) = read(warc);
        let got: Vec<(&str, &str)> = docs
            .iter()
            .map(|d| (d.id.as_str(), d.text.as_str()))
            .collect();
        assert_eq!(
            got,
            [("http://a/", "<p>Hello</p>"), ("http://b/", "<p>Hi!</p>")]
        );
        assert_eq!(bad.len(), 1);
        assert!(bad[0].reason.contains("bad chunk size"), "{bad:?}");
    }

    #[test]
    fn a_last_chunk_without_its_crlf_or_terminator_keeps_the_data() {
        // The data chunk ends exactly at the end of the block: no CRLF, no closing empty chunk.
        let warc = record(
            "response",
            "http://a/",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n<p>Hi",
        );
        let (docs, bad) = read(warc);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(docs[0].text, "<p>Hi");
        // A chunk size beyond the record, with an overflowing size, is a bad record.
        let warc = record(
            "response",
            "http://b/",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nx",
        );
        let (docs, bad) = read(warc);
        assert!(
            docs.is_empty() && bad[0].reason.contains("longer than the record"),
            "{bad:?}"
        );
    }

    #[test]
    fn a_content_length_from_the_file_sizes_nothing() {
        // A header claiming an exabyte: read as far as the data goes, reported as cut short.
        let mut warc =
            b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: 1000000000000000\r\n\r\n".to_vec();
        warc.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n<p>x</p>");
        let (docs, bad) = read(warc);
        assert!(docs.is_empty());
        assert!(bad[0].reason.contains("limit"), "{bad:?}");
    }

    #[test]
    fn a_truncated_gzip_warc_keeps_the_records_before_the_break() {
        let mut warc = Vec::new();
        for i in 0..200 {
            warc.extend(record(
                "response",
                &format!("http://a/{i}"),
                format!("HTTP/1.1 200 OK\r\n\r\n<p>page {i} with some text</p>").as_bytes(),
            ));
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), Default::default());
        std::io::Write::write_all(&mut gz, &warc).unwrap();
        let gz = gz.finish().unwrap();
        let cut = gz[..gz.len() * 2 / 3].to_vec();
        let input = Box::new(std::io::BufReader::new(flate2::read::MultiGzDecoder::new(
            std::io::Cursor::new(cut),
        )));
        let (mut docs, mut bad) = (Vec::new(), Vec::new());
        read_warc(input, Path::new("t.warc.gz"), &mut bad, &mut |d| {
            docs.push(d);
            Ok(())
        })
        .unwrap();
        assert!(docs.len() > 50 && docs.len() < 200, "{}", docs.len());
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(
            bad[0].reason.contains("truncated") || bad[0].reason.contains("cut short"),
            "{bad:?}"
        );
    }

    #[test]
    fn a_cut_record_is_reported() {
        let mut warc = record(
            "response",
            "http://a/",
            b"HTTP/1.1 200 OK\r\n\r\n<p>Hello</p>",
        );
        warc.truncate(warc.len() - 10);
        let (docs, bad) = read(warc);
        assert!(docs.is_empty());
        assert!(bad[0].reason.contains("cut short"), "{bad:?}");
    }
}

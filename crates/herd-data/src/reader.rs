//! Reading documents from files: JSON records (`.jsonl` lines, plain, `.gz` or `.zst`, or a
//! `.json` array), Parquet tables (`.parquet`, one row per document), web pages (`.html`, and
//! `.warc` archives, see [`crate::warc`]) and plain text (one document per file; a file that is
//! not UTF-8 is read as Latin-1, the usual encoding of older plain-text archives such as Project
//! Gutenberg's). Records take their text, URL and date from named fields ([`Fields`]). Folders
//! are read recursively in name order. A record that is not JSON or has no text field is
//! counted and reported with its line number, never fatal.

use std::path::{Path, PathBuf};

pub use herd_util::fs::expand_home;
use herd_util::records::{open, read_all, Compression};
pub use herd_util::records::{read_records, BadRecord, Record};

use crate::error::{Error, Result};

/// One document: where it came from and its text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Document {
    /// `file:line` for JSONL records, `file#row` for Parquet rows, the URL for WARC records,
    /// the file for text and HTML files.
    pub id: String,
    /// The document's text.
    pub text: String,
    /// The page's URL, when the record has one (the URL field, `WARC-Target-URI`).
    pub url: Option<String>,
    /// When it was crawled, as ISO 8601 text (the date field, `WARC-Date`); dates compare as
    /// text, which orders ISO 8601 times of one format correctly.
    pub date: Option<String>,
}

/// The record fields documents are read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Fields {
    /// The text (`text`).
    pub text: String,
    /// The URL (`url`); optional in each record.
    pub url: String,
    /// The crawl date (`date`; C4 calls it `timestamp`); optional in each record.
    pub date: String,
}

impl Fields {
    /// Text from `text`, and the usual `url` and `date` fields.
    pub fn text(text: &str) -> Fields {
        Fields {
            text: text.to_string(),
            url: "url".into(),
            date: "date".into(),
        }
    }
}

impl Default for Fields {
    fn default() -> Fields {
        Fields::text("text")
    }
}

/// The files under `inputs` (files as given, folders recursively in name order) that hold
/// documents: `*.jsonl`, `*.json`, `*.txt`, `*.html`/`*.htm` and `*.warc`, each possibly `.gz`
/// (`.jsonl` also `.zst`), and `*.parquet`.
pub fn input_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    Ok(herd_util::fs::list_files(inputs, &|p| kind(p).is_some())?)
}

#[derive(Clone, Copy)]
enum Kind {
    /// One JSON object per line (`.jsonl`).
    JsonLines,
    /// One JSON array of records (`.json`, LLaMA-Factory's data files).
    JsonArray,
    /// One document per file (`.txt`).
    Text,
    /// One web page per file (`.html`, `.htm`): its markup, decoded from its declared encoding.
    Html,
    /// Web archive records (`.warc`): every HTML response, by its URL.
    Warc,
    /// A Parquet table, one row per document (`.parquet`; compressed inside).
    Parquet,
}

/// The kind of `path` and how it is compressed.
fn kind(path: &Path) -> Option<(Kind, Compression)> {
    let name = path.file_name()?.to_string_lossy();
    let (compression, base) = Compression::of_name(&name);
    if compression == Compression::Zstd && !(base.ends_with(".jsonl") || base.ends_with(".json")) {
        return None;
    }
    let kind = if base.ends_with(".parquet") && compression == Compression::None {
        Kind::Parquet
    } else if base.ends_with(".jsonl") {
        Kind::JsonLines
    } else if base.ends_with(".json") {
        Kind::JsonArray
    } else if base.ends_with(".txt") {
        Kind::Text
    } else if base.ends_with(".html") || base.ends_with(".htm") {
        Kind::Html
    } else if base.ends_with(".warc") {
        Kind::Warc
    } else {
        return None;
    };
    Some((kind, compression))
}

/// Calls `each` with every document of `path`, in file order; records take their text, URL and
/// date from `fields`. Bad records go to `bad`.
pub fn read_documents(
    path: &Path,
    fields: &Fields,
    bad: &mut Vec<BadRecord>,
    each: &mut dyn FnMut(Document) -> Result<()>,
) -> Result<()> {
    match kind(path) {
        Some((kind @ (Kind::Text | Kind::Html), compression)) => {
            let bytes = match read_all(&mut open(path, compression)?) {
                Ok(bytes) => bytes,
                Err(reason) => {
                    bad.push(BadRecord {
                        at: path.display().to_string(),
                        reason,
                    });
                    return Ok(());
                }
            };
            let text = match kind {
                Kind::Html => crate::charset::decode(&bytes),
                _ => String::from_utf8(bytes)
                    .unwrap_or_else(|e| e.into_bytes().iter().map(|&b| b as char).collect()),
            };
            each(Document {
                id: path.display().to_string(),
                text,
                ..Document::default()
            })
        }
        Some((Kind::Warc, compression)) => {
            crate::warc::read_warc(open(path, compression)?, path, bad, each)
        }
        Some((Kind::Parquet, _)) => crate::parquet_file::read_parquet(path, fields, bad, each),
        Some(_) => {
            let mut missing = Vec::new();
            read_records(path, bad, &mut |record| {
                let field = |name: &str| record.value.get(name).and_then(|v| v.as_str());
                match field(&fields.text) {
                    Some(text) => each(Document {
                        text: text.to_string(),
                        url: field(&fields.url).map(String::from),
                        date: field(&fields.date).map(String::from),
                        id: record.at,
                    }),
                    None => {
                        let reason = format!("no string field {:?}", fields.text);
                        missing.push(BadRecord {
                            at: record.at,
                            reason,
                        });
                        Ok(())
                    }
                }
            })?;
            bad.append(&mut missing);
            Ok(())
        }
        None => Err(Error::format(
            path,
            "unknown input kind: expected .jsonl, .json, .txt, .html or .warc, each possibly .gz, \
             .jsonl.zst, or .parquet",
        )),
    }
}

/// `text` cut at line breaks into pieces of at least `target_chars` bytes (the last may be
/// shorter), so a whole book, or a file of one article per line, becomes many documents of a
/// few thousand characters that the loader can shuffle. Concatenated, the pieces are `text`.
pub fn split_lines(text: &str, target_chars: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find('\n') {
        let mut end = search + found + 1;
        while text[end..].starts_with('\n') {
            end += 1;
        }
        if end - start >= target_chars {
            pieces.push(&text[start..end]);
            start = end;
        }
        search = end;
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn collect(path: &Path) -> (Vec<Document>, Vec<BadRecord>) {
        let (mut docs, mut bad) = (Vec::new(), Vec::new());
        read_documents(path, &Fields::default(), &mut bad, &mut |d| {
            docs.push(d);
            Ok(())
        })
        .unwrap();
        (docs, bad)
    }

    #[test]
    fn jsonl_bad_records_are_counted_with_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        std::fs::write(
            &path,
            "{\"text\":\"one\"}\nnot json\n\n{\"id\":3}\n{\"text\":\"two\"}",
        )
        .unwrap();
        let (docs, bad) = collect(&path);
        let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(texts, ["one", "two"]);
        assert!(docs[1].id.ends_with("a.jsonl:5"));
        assert_eq!(bad.len(), 2);
        assert!(bad[0].at.ends_with(":2") && bad[0].reason.contains("not JSON"));
        assert!(bad[1].at.ends_with(":4") && bad[1].reason.contains("\"text\""));
    }

    #[test]
    fn texts_split_at_line_breaks_into_pieces_that_concatenate_back() {
        let text = "one one\ntwo\n\n\nthree three three\n\nfour";
        let pieces = split_lines(text, 10);
        assert_eq!(
            pieces,
            ["one one\ntwo\n\n\n", "three three three\n\n", "four"]
        );
        assert_eq!(pieces.concat(), text);
        assert_eq!(split_lines("no breaks", 2), ["no breaks"]);
        assert!(split_lines("", 2).is_empty());
    }

    #[test]
    fn gzip_and_text_files_and_folders() {
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("b.jsonl.gz");
        let mut enc =
            flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), Default::default());
        enc.write_all(b"{\"text\":\"zipped\"}\n").unwrap();
        enc.finish().unwrap();
        std::fs::write(dir.path().join("a.txt"), "plain book").unwrap();
        std::fs::write(dir.path().join("c.txt"), b"Bruneti\xe8re").unwrap();
        std::fs::write(dir.path().join("notes.md"), "skipped").unwrap();
        let files = input_files(&[dir.path().to_path_buf()]).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.txt", "b.jsonl.gz", "c.txt"]);
        assert_eq!(
            collect(&files[2]).0[0].text,
            "Brunetière",
            "Latin-1 fallback"
        );
        assert_eq!(collect(&files[0]).0[0].text, "plain book");
        assert_eq!(collect(&files[1]).0[0].text, "zipped");
    }
}

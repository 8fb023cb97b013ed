//! Reading JSON records — `.jsonl` (one per line) or `.json` (one array), either plain, gzip
//! (`.gz`, concatenated members too) or zstd (`.zst`) — with the position of each (`file:line`
//! or `file#index`) for messages. A line that is not JSON is a bad record, counted with its
//! reason; so is the rest of a stream that cannot be read on (a truncated or corrupt `.gz` or
//! `.zst`): the records before it are kept and the caller goes on with its next file.
//!
//! Every crate that reads data files (curation, tokenizing, post-training sets) reads them
//! through here, so they agree on compression and on what counts as a bad record.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;

use crate::error::{FileError, Result};
use crate::text::printable_path;

/// One JSON record and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// `file:line` (JSON Lines) or `file#index` (a JSON array, from 0).
    pub at: String,
    /// The record.
    pub value: serde_json::Value,
}

/// A record that could not be read, with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRecord {
    /// `file:line`, `file#index`, `file@byte` or the file.
    pub at: String,
    /// What was wrong.
    pub reason: String,
}

/// How a file is compressed as a whole, from its name's last suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed.
    None,
    /// `.gz` (concatenated members allowed).
    Gzip,
    /// `.zst`.
    Zstd,
}

impl Compression {
    /// The compression of the file named `name`, and the name without the compression suffix.
    pub fn of_name(name: &str) -> (Compression, &str) {
        if let Some(base) = name.strip_suffix(".gz") {
            (Compression::Gzip, base)
        } else if let Some(base) = name.strip_suffix(".zst") {
            (Compression::Zstd, base)
        } else {
            (Compression::None, name)
        }
    }
}

/// `path` opened for reading through its decompressor.
pub fn open(path: &Path, compression: Compression) -> Result<Box<dyn BufRead>> {
    let file = File::open(path).map_err(|e| FileError::io(path, e))?;
    Ok(match compression {
        Compression::None => Box::new(BufReader::new(file)),
        Compression::Gzip => Box::new(BufReader::new(MultiGzDecoder::new(file))),
        Compression::Zstd => Box::new(BufReader::new(
            zstd::Decoder::new(file).map_err(|e| FileError::io(path, e))?,
        )),
    })
}

/// Reads all of `input` (a whole-file format such as a JSON array or an HTML page). A stream
/// that breaks off returns the reason, naming the byte where it broke (of the decompressed
/// data).
pub fn read_all(input: &mut dyn Read) -> std::result::Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    match input.read_to_end(&mut bytes) {
        Ok(_) => Ok(bytes),
        Err(e) => Err(format!(
            "the file cannot be read past byte {} ({e}): truncated or corrupt",
            bytes.len()
        )),
    }
}

/// What [`for_each_line`] calls with each line's number and bytes.
pub type LineVisitor<'a, E> = dyn FnMut(usize, &[u8]) -> std::result::Result<(), E> + 'a;

/// Calls `each` with the number (from 1) and bytes (without `\n`) of every line of `input`.
/// When the stream breaks off (a truncated `.gz`, corrupt data) the place is added to `bad`
/// and reading stops there; an error of `each` stops it too and is returned.
pub fn for_each_line<E>(
    mut input: Box<dyn BufRead>,
    path: &Path,
    bad: &mut Vec<BadRecord>,
    each: &mut LineVisitor<E>,
) -> std::result::Result<(), E> {
    let mut line = Vec::new();
    let (mut number, mut offset) = (0usize, 0u64);
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                number += 1;
                offset += n as u64;
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                each(number, &line)?;
            }
            Err(e) => {
                bad.push(BadRecord {
                    at: format!("{}:{}", printable_path(path), number + 1),
                    reason: format!(
                        "the file cannot be read past byte {offset} ({e}): truncated or \
                         corrupt; the records before are kept"
                    ),
                });
                return Ok(());
            }
        }
    }
}

/// Whether `path` names a JSON data file (`.jsonl` or `.json`, possibly `.gz`/`.zst`).
pub fn is_json_data(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let (_, base) = Compression::of_name(&name);
    base.ends_with(".jsonl") || base.ends_with(".json")
}

/// Calls `each` with every record of a JSON data file, in file order: `.jsonl` (one value per
/// line; blank lines skipped) or `.json` (one array), either possibly `.gz` or `.zst`. Lines
/// that are not JSON, and a stream that breaks off, go to `bad`.
pub fn read_records<E: From<FileError>>(
    path: &Path,
    bad: &mut Vec<BadRecord>,
    each: &mut dyn FnMut(Record) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let (compression, base) = Compression::of_name(&name);
    let shown = printable_path(path);
    if base.ends_with(".json") {
        let bytes = match read_all(&mut open(path, compression)?) {
            Ok(bytes) => bytes,
            Err(reason) => {
                bad.push(BadRecord { at: shown, reason });
                return Ok(());
            }
        };
        let items = match serde_json::from_slice(&bytes) {
            Ok(serde_json::Value::Array(items)) => items,
            Ok(_) => return Err(FileError::format(path, "expected a JSON array of records").into()),
            Err(e) => {
                let message = format!("not JSON ({e}); JSON Lines files end in .jsonl");
                return Err(FileError::format(path, message).into());
            }
        };
        for (i, value) in items.into_iter().enumerate() {
            each(Record {
                at: format!("{shown}#{i}"),
                value,
            })?;
        }
        return Ok(());
    }
    if !base.ends_with(".jsonl") {
        return Err(FileError::format(
            path,
            "not a JSON data file: expected .jsonl or .json (an array), either possibly .gz or .zst",
        )
        .into());
    }
    let input = open(path, compression)?;
    let (mut not_json, mut broken) = (Vec::new(), Vec::new());
    for_each_line(input, path, &mut broken, &mut |n, line| {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let at = format!("{shown}:{n}");
        match serde_json::from_slice(line) {
            Ok(value) => each(Record { at, value }),
            Err(e) => {
                not_json.push(BadRecord {
                    at,
                    reason: format!("not JSON: {e}"),
                });
                Ok(())
            }
        }
    })?;
    bad.append(&mut not_json);
    bad.append(&mut broken);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn collect(path: &Path) -> (Vec<Record>, Vec<BadRecord>) {
        let (mut records, mut bad) = (Vec::new(), Vec::new());
        read_records::<FileError>(path, &mut bad, &mut |r| {
            records.push(r);
            Ok(())
        })
        .unwrap();
        (records, bad)
    }

    #[test]
    fn bad_lines_are_counted_with_their_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        std::fs::write(
            &path,
            b"{\"text\":\"one\"}\nnot json\n\n[1]\n\xff\n{\"text\":\"two\"}",
        )
        .unwrap();
        let (records, bad) = collect(&path);
        assert_eq!(records.len(), 3);
        assert!(records[2].at.ends_with("a.jsonl:6"));
        assert_eq!(bad.len(), 2);
        assert!(bad[0].at.ends_with(":2") && bad[0].reason.contains("not JSON"));
        assert!(
            bad[1].at.ends_with(":5"),
            "invalid UTF-8 is a bad record: {bad:?}"
        );
    }

    #[test]
    fn a_truncated_gzip_keeps_the_records_before_the_break() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), Default::default());
        for i in 0..2000 {
            writeln!(enc, "{{\"text\":\"record number {i} with some words\"}}").unwrap();
        }
        let bytes = enc.finish().unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let (records, bad) = collect(&path);
        assert!(
            records.len() > 100 && records.len() < 2000,
            "{}",
            records.len()
        );
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].reason.contains("truncated"), "{bad:?}");
        let zst = dir.path().join("b.json.zst");
        let array = zstd::encode_all(&b"[{\"a\":1},{\"a\":2}]"[..], 3).unwrap();
        std::fs::write(&zst, &array[..array.len() - 4]).unwrap();
        let (records, bad) = collect(&zst);
        assert!(records.is_empty());
        assert!(bad[0].at.ends_with("b.json.zst") && bad[0].reason.contains("truncated"));
    }
}

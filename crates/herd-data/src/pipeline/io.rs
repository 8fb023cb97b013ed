//! The files a pipeline run reads and writes: input files and earlier phases' outputs read in
//! chunks of documents; each (phase, input file) written as gzipped JSONL under a temporary name
//! and renamed when complete, with a counts file that records what it was made from.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use herd_util::fs::{write_atomic, AtomicFile};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::run::Counts;
use super::stage::Doc;
use crate::error::{Error, Result};
use crate::reader::{read_documents, BadRecord, Fields};

/// Documents processed together (in parallel) and held in memory at once: up to this many …
pub(super) const CHUNK: usize = 4096;
/// … or this many bytes of text (web pages run to hundreds of kilobytes each).
pub(super) const CHUNK_BYTES: usize = 4 << 20;

pub(super) fn counts_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.counts.json"))
}

/// A finished file of a phase: its counts, and what it was made from.
#[derive(Serialize, Deserialize)]
struct Finished {
    fingerprint: String,
    counts: Counts,
}

/// The counts of a file a phase has finished, `None` when it has not; output made from other
/// inputs or settings is an error, never reused.
pub(super) fn read_counts(path: &Path, fingerprint: &str) -> Result<Option<Counts>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let finished: Finished = serde_json::from_str(&text)
        .map_err(|e| Error::format(path, format!("unreadable counts ({e})")))?;
    if finished.fingerprint != fingerprint {
        return Err(Error::format(
            path,
            "this output was made from other input files or stage settings than the pipeline's \
             now (an input or a stage's file changed since): pass --overwrite to start again, or \
             set another [output] dir",
        ));
    }
    Ok(Some(finished.counts))
}

pub(super) fn write_counts(path: &Path, counts: &Counts, fingerprint: &str) -> Result<()> {
    let finished = Finished {
        fingerprint: fingerprint.to_string(),
        counts: counts.clone(),
    };
    Ok(write_atomic(
        path,
        &serde_json::to_vec(&finished).expect("json"),
    )?)
}

/// Where a phase reads one file's documents.
pub(super) enum Input {
    /// An input file of the pipeline.
    Raw(PathBuf),
    /// The previous phase's output.
    Phase(PathBuf),
}

/// Calls `each` with chunks of the documents of `input`, in order; bad records are counted.
pub(super) fn read_chunks(
    input: &Input,
    fields: &Fields,
    counts: &mut Counts,
    each: &mut dyn FnMut(Vec<Doc>) -> Result<()>,
) -> Result<()> {
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut bytes = 0;
    let full = |chunk: &Vec<Doc>, bytes: &mut usize| {
        *bytes += chunk.last().map_or(0, |d| d.text.len());
        let full = chunk.len() == CHUNK || *bytes >= CHUNK_BYTES;
        if full {
            *bytes = 0;
        }
        full
    };
    match input {
        Input::Raw(path) => {
            let mut bad: Vec<BadRecord> = Vec::new();
            let source = path.display().to_string();
            read_documents(path, fields, &mut bad, &mut |d| {
                let mut meta = Map::new();
                meta.insert("source".into(), Value::String(source.clone()));
                for (key, value) in [("url", d.url), ("date", d.date)] {
                    if let Some(value) = value {
                        meta.insert(key.into(), Value::String(value));
                    }
                }
                chunk.push(Doc {
                    id: d.id,
                    text: d.text,
                    meta,
                });
                if full(&chunk, &mut bytes) {
                    each(std::mem::take(&mut chunk))?;
                }
                Ok(())
            })?;
            counts.bad_records += bad.len() as u64;
            counts.bad_examples.extend(
                bad.iter()
                    .take(10)
                    .map(|b| format!("{}: {}", b.at, b.reason)),
            );
        }
        Input::Phase(path) => {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            for (n, line) in BufReader::new(MultiGzDecoder::new(file))
                .lines()
                .enumerate()
            {
                let line = line.map_err(|e| Error::io(path, e))?;
                let bad = || Error::format(path, format!("line {}: not a document record", n + 1));
                let Value::Object(mut record) = serde_json::from_str(&line).map_err(|_| bad())?
                else {
                    return Err(bad());
                };
                let text = record
                    .remove("text")
                    .and_then(|v| v.as_str().map(String::from));
                let id = record
                    .remove("id")
                    .and_then(|v| v.as_str().map(String::from));
                let (Some(text), Some(id)) = (text, id) else {
                    return Err(bad());
                };
                chunk.push(Doc {
                    id,
                    text,
                    meta: record,
                });
                if full(&chunk, &mut bytes) {
                    each(std::mem::take(&mut chunk))?;
                }
            }
        }
    }
    if !chunk.is_empty() {
        each(chunk)?;
    }
    Ok(())
}

/// A gzipped JSONL file written to a temporary name and renamed when finished.
pub(super) struct JsonlGz {
    path: PathBuf,
    writer: GzEncoder<AtomicFile>,
}

impl JsonlGz {
    pub(super) fn create(path: &Path, level: u32) -> Result<JsonlGz> {
        let file = AtomicFile::create(path)?;
        Ok(JsonlGz {
            path: path.to_path_buf(),
            writer: GzEncoder::new(file, flate2::Compression::new(level)),
        })
    }

    /// Writes `doc` as `{"id", "text", meta…}` plus `extra`.
    pub(super) fn write(&mut self, doc: Doc, extra: Option<(&str, &str)>) -> Result<()> {
        let mut record = Map::new();
        record.insert("id".into(), Value::String(doc.id));
        record.insert("text".into(), Value::String(doc.text));
        record.extend(doc.meta);
        if let Some((key, value)) = extra {
            record.insert(key.into(), Value::String(value.into()));
        }
        serde_json::to_writer(&mut self.writer, &record)
            .map_err(|e| Error::format(&self.path, e.to_string()))?;
        self.writer
            .write_all(b"\n")
            .map_err(|e| Error::io(&self.path, e))
    }

    pub(super) fn finish(self) -> Result<()> {
        let file = self.writer.finish().map_err(|e| Error::io(&self.path, e))?;
        Ok(file.commit()?)
    }
}

/// Where pass 2 writes one file's documents: the kept ones, and (`[output] removed = true`) the
/// removed ones with the reason in `removed_by`.
pub(super) struct Outputs {
    pub(super) kept: PathBuf,
    pub(super) removed: Option<PathBuf>,
}

//! The token-shard format that curation writes and pretraining reads: one file per shard,
//! memory-mapped by readers.
//!
//! ```text
//! offset 0   b"HERDTOK1"           magic and format version
//!        8   u32  vocab_size       every id is below it
//!        12  u32  reserved (0)
//!        16  u64  n_tokens
//!        24  u64  n_documents
//!        32  u32 × n_tokens        token ids, documents back to back
//!        …   u64 × n_documents     end offset (in tokens) of each document
//! ```
//! All integers are little-endian. A writer streams tokens to a temporary file, appends the
//! document index at the end and renames the file into place, so a shard either exists whole or
//! not at all. Documents carry their own `<|begin_of_text|>`/`<|end_of_text|>` ids, so readers
//! need no tokenizer.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"HERDTOK1";
const HEADER_BYTES: usize = 32;

/// Writes one shard; nothing is visible at `path` until [`ShardWriter::finish`].
pub struct ShardWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    vocab_size: u32,
    n_tokens: u64,
    doc_ends: Vec<u64>,
}

impl ShardWriter {
    /// Starts a shard at `path` for ids below `vocab_size`.
    pub fn create(path: &Path, vocab_size: u32) -> Result<ShardWriter> {
        let tmp = path.with_extension("tokens.tmp");
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&[0u8; HEADER_BYTES])
            .map_err(|e| Error::io(&tmp, e))?;
        Ok(ShardWriter {
            path: path.to_path_buf(),
            tmp,
            out,
            vocab_size,
            n_tokens: 0,
            doc_ends: Vec::new(),
        })
    }

    /// Appends one document.
    pub fn push(&mut self, tokens: &[u32]) -> Result<()> {
        if let Some(bad) = tokens.iter().find(|&&t| t >= self.vocab_size) {
            return Err(Error::format(
                &self.path,
                format!(
                    "document {}: token id {bad} is not below the vocabulary size {}",
                    self.doc_ends.len(),
                    self.vocab_size
                ),
            ));
        }
        let mut bytes = Vec::with_capacity(tokens.len() * 4);
        for t in tokens {
            bytes.extend_from_slice(&t.to_le_bytes());
        }
        self.out
            .write_all(&bytes)
            .map_err(|e| Error::io(&self.tmp, e))?;
        self.n_tokens += tokens.len() as u64;
        self.doc_ends.push(self.n_tokens);
        Ok(())
    }

    /// Tokens written so far.
    pub fn n_tokens(&self) -> u64 {
        self.n_tokens
    }

    /// Writes the index and header, syncs, and renames the shard into place.
    pub fn finish(mut self) -> Result<PathBuf> {
        let io = |e| Error::io(&self.tmp, e);
        let mut index = Vec::with_capacity(self.doc_ends.len() * 8);
        for end in &self.doc_ends {
            index.extend_from_slice(&end.to_le_bytes());
        }
        self.out.write_all(&index).map_err(io)?;
        let mut header = Vec::with_capacity(HEADER_BYTES);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&self.vocab_size.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&self.n_tokens.to_le_bytes());
        header.extend_from_slice(&(self.doc_ends.len() as u64).to_le_bytes());
        self.out.seek(SeekFrom::Start(0)).map_err(io)?;
        self.out.write_all(&header).map_err(io)?;
        let file = self.out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(self.path)
    }
}

/// A memory-mapped shard.
pub struct Shard {
    map: Mmap,
    vocab_size: u32,
    n_tokens: usize,
    n_docs: usize,
}

impl Shard {
    /// Maps and checks a shard: magic, sizes, and a monotone document index.
    pub fn open(path: &Path) -> Result<Shard> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: shards are written once and renamed into place, never modified after.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let bad = |what: String| Error::format(path, what);
        if map.len() < HEADER_BYTES || &map[..8] != MAGIC {
            return Err(bad("not a herd token shard (no HERDTOK1 header)".into()));
        }
        let u64_at = |at: usize| u64::from_le_bytes(map[at..at + 8].try_into().expect("8 bytes"));
        let vocab_size = u32::from_le_bytes(map[8..12].try_into().expect("4 bytes"));
        let (n_tokens, n_docs) = (u64_at(16), u64_at(24));
        let expected = n_tokens
            .checked_mul(4)
            .zip(n_docs.checked_mul(8))
            .and_then(|(t, d)| t.checked_add(d))
            .and_then(|b| b.checked_add(HEADER_BYTES as u64));
        if expected != Some(map.len() as u64) {
            return Err(bad(format!(
                "{} bytes but the header says {n_tokens} tokens and {n_docs} documents: the \
                 file is truncated or corrupt",
                map.len()
            )));
        }
        let (n_tokens, n_docs) = (n_tokens as usize, n_docs as usize);
        // Every id must be inside the vocabulary the header declares (training looks rows up
        // by id): one pass over the tokens, at memory speed.
        let ids = &map[HEADER_BYTES..HEADER_BYTES + 4 * n_tokens];
        if let Some(at) = ids
            .chunks_exact(4)
            .position(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) >= vocab_size)
        {
            return Err(bad(format!(
                "token {at} is not below the vocabulary size {vocab_size}: the file is corrupt"
            )));
        }
        let shard = Shard {
            map,
            vocab_size,
            n_tokens,
            n_docs,
        };
        let mut previous = 0;
        for d in 0..n_docs {
            let end = shard.doc_end(d);
            if end < previous || end > n_tokens {
                return Err(bad(format!("document {d} ends at {end}: bad index")));
            }
            previous = end;
        }
        if n_docs > 0 && previous != n_tokens {
            return Err(bad(format!(
                "documents end at {previous} but {n_tokens} tokens"
            )));
        }
        Ok(shard)
    }

    fn doc_end(&self, doc: usize) -> usize {
        let at = HEADER_BYTES + 4 * self.n_tokens + 8 * doc;
        u64::from_le_bytes(self.map[at..at + 8].try_into().expect("8 bytes")) as usize
    }

    /// A hash of the whole file: which data a training run read.
    pub fn content_hash(&self) -> String {
        herd_util::fingerprint::of_bytes(&self.map)
    }

    /// Ids are below this.
    pub fn vocab_size(&self) -> u32 {
        self.vocab_size
    }

    /// Number of documents.
    pub fn n_docs(&self) -> usize {
        self.n_docs
    }

    /// Number of tokens over all documents.
    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    /// Token range `[start, end)` of document `doc`.
    pub fn doc_range(&self, doc: usize) -> (usize, usize) {
        let start = if doc == 0 { 0 } else { self.doc_end(doc - 1) };
        (start, self.doc_end(doc))
    }

    /// Appends tokens `[start, end)` of the shard to `out`.
    pub fn read_tokens(&self, start: usize, end: usize, out: &mut Vec<u32>) {
        let bytes = &self.map[HEADER_BYTES + 4 * start..HEADER_BYTES + 4 * end];
        out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes"))),
        );
    }

    /// The tokens of document `doc`.
    pub fn document(&self, doc: usize) -> Vec<u32> {
        let (start, end) = self.doc_range(doc);
        let mut out = Vec::with_capacity(end - start);
        self.read_tokens(start, end, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, docs: &[Vec<u32>]) {
        let mut w = ShardWriter::create(path, 100).unwrap();
        for d in docs {
            w.push(d).unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn documents_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tokens");
        let docs = vec![vec![1, 2, 3], vec![], vec![99, 0]];
        write(&path, &docs);
        let shard = Shard::open(&path).unwrap();
        assert_eq!(
            (shard.n_docs(), shard.n_tokens(), shard.vocab_size()),
            (3, 5, 100)
        );
        for (i, d) in docs.iter().enumerate() {
            assert_eq!(&shard.document(i), d);
        }
        assert!(!path.with_extension("tokens.tmp").exists());
    }

    #[test]
    fn out_of_vocabulary_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::create(&dir.path().join("a.tokens"), 10).unwrap();
        let err = w.push(&[3, 10]).unwrap_err().to_string();
        assert!(
            err.contains("token id 10") && err.contains("document 0"),
            "{err}"
        );
    }

    #[test]
    fn truncated_and_foreign_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tokens");
        write(&path, &[vec![1, 2, 3]]);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let err = Shard::open(&path).err().unwrap().to_string();
        assert!(
            err.contains("a.tokens") && err.contains("truncated"),
            "{err}"
        );
        std::fs::write(&path, b"hello world, not a shard at all....").unwrap();
        let err = Shard::open(&path).err().unwrap().to_string();
        assert!(err.contains("HERDTOK1"), "{err}");
    }
}

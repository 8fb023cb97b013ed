//! The pretraining data loader: documents from token shards of several sources, drawn by
//! mixture weight in a seeded order and packed into fixed-length rows (paper §3.2: several
//! documents per sequence, attention masked between them, positions restarting at each).
//!
//! Everything is a function of the seed and a small [`Cursor`], so a checkpoint that saves the
//! cursor resumes the exact stream:
//! - document `n` of the run comes from the source chosen by hashing `(seed, n)` against the
//!   mixture weights;
//! - each source walks its training documents in a permutation drawn from `(seed, source,
//!   epoch)`, reshuffled every epoch;
//! - a row holds `seq_len + 1` tokens; a document cut at the end of a row continues in the
//!   next, whose first token repeats the last one, so every token inside a document is a
//!   target exactly once and no target crosses a document boundary.
//!
//! A fixed share of each source's documents (chosen by hash) is held out for validation.

use std::path::{Path, PathBuf};

use herd_data::Shard;
use herd_util::seeded::{fnv1a64, shuffle, splitmix64};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A source as a recipe names it: shards (a file or a folder of `*.tokens`) and a weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSpec {
    /// Name used in mixes and metrics.
    pub name: String,
    /// A shard file or a folder of shards.
    pub shards: PathBuf,
    /// Mixture weight in the main phase.
    pub weight: f64,
}

/// A document: shard index and document index within the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocRef {
    shard: u32,
    doc: u32,
}

struct Source {
    shards: Vec<Shard>,
    train: Vec<DocRef>,
    validation: Vec<DocRef>,
}

/// Where a source is in its walk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// Completed passes over the source.
    pub epoch: u64,
    /// Next index into this epoch's permutation.
    pub next: u64,
}

/// A document cut at the end of the last row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    source: usize,
    doc: DocRef,
    /// Index of the next token not yet a target.
    offset: usize,
}

/// The loader's whole state between batches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// Documents drawn so far.
    pub drawn: u64,
    /// Per source.
    pub sources: Vec<SourcePosition>,
    /// The document continuing into the next row.
    pub pending: Option<Pending>,
}

/// Rows ready for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Rows.
    pub rows: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// Input ids, `rows × seq_len`.
    pub inputs: Vec<u32>,
    /// Target ids (the next token), `rows × seq_len`.
    pub targets: Vec<u32>,
    /// 1 where the target is in the input's document, else 0.
    pub weights: Vec<f32>,
    /// Lengths of the document pieces of each row's inputs (for the attention mask).
    pub doc_lens: Vec<Vec<usize>>,
}

impl Batch {
    /// Positions that carry loss.
    pub fn n_targets(&self) -> usize {
        self.weights.iter().filter(|&&w| w > 0.0).count()
    }

    /// Rows `[start, start + n)` as their own batch (a micro-batch).
    pub fn slice(&self, start: usize, n: usize) -> Batch {
        let t = self.seq_len;
        let span = start * t..(start + n) * t;
        Batch {
            rows: n,
            seq_len: t,
            inputs: self.inputs[span.clone()].to_vec(),
            targets: self.targets[span.clone()].to_vec(),
            weights: self.weights[span].to_vec(),
            doc_lens: self.doc_lens[start..start + n].to_vec(),
        }
    }
}

/// Packs documents into rows.
pub struct Loader {
    sources: Vec<Source>,
    seed: u64,
    cursor: Cursor,
    orders: Vec<(u64, Vec<u32>)>,
}

impl Loader {
    /// Opens every source's shards and splits off `validation_fraction` of its documents.
    pub fn open(specs: &[SourceSpec], seed: u64, validation_fraction: f64) -> Result<Loader> {
        let mut sources = Vec::new();
        for (s, spec) in specs.iter().enumerate() {
            let shards = shard_files(&spec.shards)?
                .iter()
                .map(|p| Shard::open(p))
                .collect::<herd_data::Result<Vec<_>>>()?;
            let mut docs: Vec<(u64, DocRef)> = Vec::new();
            for (i, shard) in shards.iter().enumerate() {
                for d in 0..shard.n_docs() {
                    let (start, end) = shard.doc_range(d);
                    if end > start + 1 {
                        let doc = DocRef {
                            shard: i as u32,
                            doc: d as u32,
                        };
                        docs.push((mix64(seed ^ 0x5eed, &[s as u64, i as u64, d as u64]), doc));
                    }
                }
            }
            let threshold = (validation_fraction.clamp(0.0, 1.0) * u64::MAX as f64) as u64;
            let (mut validation, mut train): (Vec<_>, Vec<_>) =
                docs.iter().partition(|(h, _)| *h < threshold);
            if validation.is_empty() && validation_fraction > 0.0 && docs.len() >= 2 {
                let smallest = train.iter().enumerate().min_by_key(|(_, (h, _))| *h);
                let i = smallest.expect("two documents").0;
                validation.push(train.remove(i));
            }
            if train.is_empty() {
                return Err(Error::Data(format!(
                    "source {:?} ({}) has no training documents",
                    spec.name,
                    spec.shards.display()
                )));
            }
            sources.push(Source {
                shards,
                train: train.into_iter().map(|(_, d)| d).collect(),
                validation: validation.into_iter().map(|(_, d)| d).collect(),
            });
        }
        let cursor = Cursor {
            sources: vec![SourcePosition::default(); sources.len()],
            ..Cursor::default()
        };
        Ok(Loader {
            orders: vec![(u64::MAX, Vec::new()); sources.len()],
            sources,
            seed,
            cursor,
        })
    }

    /// The largest vocabulary size any shard declares.
    pub fn vocab_size(&self) -> u32 {
        let shards = self.sources.iter().flat_map(|s| &s.shards);
        shards.map(Shard::vocab_size).max().unwrap_or(0)
    }

    /// A hash of every source's shards (their contents, in order): the data a run read, so a
    /// checkpoint resumes only on the same data.
    pub fn data_fingerprint(&self) -> String {
        let shards: Vec<Vec<String>> = self
            .sources
            .iter()
            .map(|s| s.shards.iter().map(Shard::content_hash).collect())
            .collect();
        herd_util::fingerprint::of_json(&serde_json::json!(shards))
    }

    /// The state to save in a checkpoint.
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// Continues from a saved state, which must point inside this loader's data.
    pub fn set_cursor(&mut self, cursor: Cursor) -> Result<()> {
        if cursor.sources.len() != self.sources.len() {
            return Err(Error::Checkpoint(format!(
                "the data cursor has {} sources, the recipe {}",
                cursor.sources.len(),
                self.sources.len()
            )));
        }
        let outside = cursor
            .sources
            .iter()
            .zip(&self.sources)
            .any(|(position, source)| position.next > source.train.len() as u64)
            || cursor.pending.as_ref().is_some_and(|p| {
                let shard = self
                    .sources
                    .get(p.source)
                    .and_then(|s| s.shards.get(p.doc.shard as usize));
                shard.is_none_or(|shard| {
                    (p.doc.doc as usize) >= shard.n_docs() || {
                        let (start, end) = shard.doc_range(p.doc.doc as usize);
                        p.offset == 0 || p.offset >= end - start
                    }
                })
            });
        if outside {
            return Err(Error::Checkpoint(
                "the data cursor points outside the shards: they changed since the checkpoint"
                    .into(),
            ));
        }
        self.cursor = cursor;
        Ok(())
    }

    /// The next `rows` training rows of `seq_len` tokens, drawing documents by `mix` (one
    /// weight per source).
    pub fn next_batch(&mut self, rows: usize, seq_len: usize, mix: &[f64]) -> Batch {
        let total: f64 = mix.iter().sum();
        let mut cursor = std::mem::take(&mut self.cursor);
        let mut packed = Vec::with_capacity(rows);
        for _ in 0..rows {
            let row = pack_row(seq_len, &mut cursor.pending, &self.sources, &mut || {
                let u = mix64(self.seed, &[cursor.drawn]) as f64 / u64::MAX as f64 * total;
                cursor.drawn += 1;
                let mut acc = 0.0;
                let s = mix
                    .iter()
                    .position(|w| {
                        acc += w;
                        u < acc
                    })
                    .unwrap_or_else(|| mix.iter().rposition(|w| *w > 0.0).expect("a weight"));
                let position = &mut cursor.sources[s];
                let n = self.sources[s].train.len() as u64;
                if position.next == n {
                    position.epoch += 1;
                    position.next = 0;
                }
                let order = &mut self.orders[s];
                if order.0 != position.epoch {
                    *order = (
                        position.epoch,
                        permutation(n as usize, self.seed, s, position.epoch),
                    );
                }
                let doc = self.sources[s].train[order.1[position.next as usize] as usize];
                position.next += 1;
                Some((s, doc))
            });
            packed.push(row.expect("training documents never run out"));
        }
        self.cursor = cursor;
        batch_of(packed, seq_len)
    }

    /// Up to `max_rows` validation rows of `seq_len` tokens: every source's held-out
    /// documents in order, packed the same way. The same every time.
    pub fn validation_batch(&self, max_rows: usize, seq_len: usize) -> Option<Batch> {
        let mut docs = self
            .sources
            .iter()
            .enumerate()
            .flat_map(|(s, source)| source.validation.iter().map(move |d| (s, *d)));
        let mut pending = None;
        let mut rows = Vec::new();
        while rows.len() < max_rows {
            match pack_row(seq_len, &mut pending, &self.sources, &mut || docs.next()) {
                Some(row) => rows.push(row),
                None => break,
            }
        }
        (!rows.is_empty()).then(|| batch_of(rows, seq_len))
    }
}

/// `seq_len + 1` tokens and the lengths of their document pieces.
struct Row {
    tokens: Vec<u32>,
    pieces: Vec<usize>,
}

/// Fills one row, continuing `pending` first and then drawing documents from `next_doc`;
/// `None` when documents run out before the row is full.
fn pack_row(
    seq_len: usize,
    pending: &mut Option<Pending>,
    sources: &[Source],
    next_doc: &mut dyn FnMut() -> Option<(usize, DocRef)>,
) -> Option<Row> {
    let mut row = Row {
        tokens: Vec::with_capacity(seq_len + 1),
        pieces: Vec::new(),
    };
    // A continued document repeats its last token as this row's first input.
    if let Some(p) = pending.as_mut() {
        p.offset -= 1;
    }
    while row.tokens.len() < seq_len + 1 {
        let p = match pending.take() {
            Some(p) => p,
            None => {
                let (source, doc) = next_doc()?;
                Pending {
                    source,
                    doc,
                    offset: 0,
                }
            }
        };
        let shard = &sources[p.source].shards[p.doc.shard as usize];
        let (start, end) = shard.doc_range(p.doc.doc as usize);
        let take = (end - start - p.offset).min(seq_len + 1 - row.tokens.len());
        let from = start + p.offset;
        shard.read_tokens(from, from + take, &mut row.tokens);
        row.pieces.push(take);
        if p.offset + take < end - start {
            *pending = Some(Pending {
                offset: p.offset + take,
                ..p
            });
        }
    }
    Some(row)
}

fn batch_of(rows: Vec<Row>, seq_len: usize) -> Batch {
    let n = rows.len();
    let mut batch = Batch {
        rows: n,
        seq_len,
        inputs: Vec::with_capacity(n * seq_len),
        targets: Vec::with_capacity(n * seq_len),
        weights: Vec::with_capacity(n * seq_len),
        doc_lens: Vec::with_capacity(n),
    };
    for row in rows {
        batch.inputs.extend_from_slice(&row.tokens[..seq_len]);
        batch.targets.extend_from_slice(&row.tokens[1..]);
        let mut lens = row.pieces;
        for &len in &lens {
            // The last token of a piece predicts the next piece's first: no loss there.
            batch.weights.extend(std::iter::repeat_n(1.0, len - 1));
            batch.weights.push(0.0);
        }
        batch.weights.truncate(batch.inputs.len());
        *lens.last_mut().expect("a row has a piece") -= 1;
        lens.retain(|&l| l > 0);
        batch.doc_lens.push(lens);
    }
    batch
}

/// A permutation of `0..n` (Fisher–Yates) from `(seed, source, epoch)`.
fn permutation(n: usize, seed: u64, source: usize, epoch: u64) -> Vec<u32> {
    let mut state = mix64(seed, &[source as u64, epoch, 0x0de5]);
    let mut order: Vec<u32> = (0..n as u32).collect();
    shuffle(&mut order, &mut state);
    order
}

/// A 64-bit hash of a seed and some numbers.
fn mix64(seed: u64, values: &[u64]) -> u64 {
    let mut state = seed ^ fnv1a64(b"herd-loader");
    for v in values {
        state ^= splitmix64(&mut v.clone());
        splitmix64(&mut state);
    }
    splitmix64(&mut state)
}

/// The shard files of a source: the file itself, or a folder's `*.tokens` in name order.
fn shard_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| {
        Error::Data(format!(
            "{}: {e} (run `herd data tokenize` to make token shards)",
            path.display()
        ))
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tokens"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Data(format!(
            "{}: no *.tokens shards in this folder",
            path.display()
        )));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_data::ShardWriter;

    /// Documents `d` of length `lens[d]` with tokens `100·d + i`.
    fn source(dir: &Path, name: &str, lens: &[usize]) -> SourceSpec {
        let path = dir.join(format!("{name}.tokens"));
        let mut w = ShardWriter::create(&path, 10_000).unwrap();
        for (d, &len) in lens.iter().enumerate() {
            let doc: Vec<u32> = (0..len as u32).map(|i| 100 * d as u32 + i).collect();
            w.push(&doc).unwrap();
        }
        w.finish().unwrap();
        SourceSpec {
            name: name.into(),
            shards: path,
            weight: 1.0,
        }
    }

    #[test]
    fn every_in_document_transition_is_a_target_once() {
        let dir = tempfile::tempdir().unwrap();
        let lens = [5, 17, 3, 40, 8, 9];
        let spec = source(dir.path(), "a", &lens);
        let mut loader = Loader::open(&[spec], 1, 0.0).unwrap();
        let mut seen = std::collections::HashMap::new();
        for _ in 0..20 {
            let b = loader.next_batch(2, 7, &[1.0]);
            assert_eq!(
                b.doc_lens.iter().map(|r| r.iter().sum::<usize>()).max(),
                Some(7)
            );
            for i in 0..b.inputs.len() {
                if b.weights[i] > 0.0 {
                    assert_eq!(b.targets[i], b.inputs[i] + 1, "target in the same document");
                    *seen.entry(b.inputs[i]).or_insert(0) += 1;
                }
            }
        }
        // 20 batches × 14 rows' worth of tokens cover the 82-token corpus several times, and
        // within each epoch each transition is counted once.
        let transitions: usize = lens.iter().map(|l| l - 1).sum();
        let total: usize = seen.values().sum();
        assert!(total >= 3 * transitions);
        assert_eq!(seen.len(), transitions);
    }

    #[test]
    fn pieces_match_positions_and_continue_across_rows() {
        let dir = tempfile::tempdir().unwrap();
        let spec = source(dir.path(), "a", &[10]);
        let mut loader = Loader::open(&[spec], 1, 0.0).unwrap();
        let b = loader.next_batch(2, 6, &[1.0]);
        assert_eq!(&b.inputs[..6], &[0, 1, 2, 3, 4, 5]);
        assert_eq!(&b.targets[..6], &[1, 2, 3, 4, 5, 6]);
        // Row 2 repeats token 6 as its first input, then the next epoch starts the document again.
        assert_eq!(&b.inputs[6..], &[6, 7, 8, 9, 0, 1]);
        assert_eq!(&b.weights[6..], &[1.0, 1.0, 1.0, 0.0, 1.0, 1.0]);
        assert_eq!(b.doc_lens, vec![vec![6], vec![4, 2]]);
    }

    #[test]
    fn cursor_resumes_the_exact_stream() {
        let dir = tempfile::tempdir().unwrap();
        let specs = [
            source(dir.path(), "a", &[5, 17, 3, 40]),
            source(dir.path(), "b", &[8, 9, 30]),
        ];
        let mix = [0.7, 0.3];
        let mut straight = Loader::open(&specs, 9, 0.0).unwrap();
        let all: Vec<Batch> = (0..10).map(|_| straight.next_batch(3, 11, &mix)).collect();
        let mut first = Loader::open(&specs, 9, 0.0).unwrap();
        for b in &all[..4] {
            assert_eq!(&first.next_batch(3, 11, &mix), b);
        }
        let saved = serde_json::to_string(first.cursor()).unwrap();
        let mut resumed = Loader::open(&specs, 9, 0.0).unwrap();
        resumed
            .set_cursor(serde_json::from_str(&saved).unwrap())
            .unwrap();
        for b in &all[4..] {
            assert_eq!(&resumed.next_batch(3, 11, &mix), b);
        }
    }

    #[test]
    fn mixture_weights_set_the_share_of_documents() {
        let dir = tempfile::tempdir().unwrap();
        let specs = [
            source(dir.path(), "a", &[2; 50]),
            source(dir.path(), "b", &[2; 50]),
        ];
        let mut loader = Loader::open(&specs, 3, 0.0).unwrap();
        loader.next_batch(1, 4000, &[0.8, 0.2]);
        let share = loader.cursor().sources[0].epoch * 50 + loader.cursor().sources[0].next;
        let share = share as f64 / loader.cursor().drawn as f64;
        assert!((share - 0.8).abs() < 0.03, "{share}");
    }

    #[test]
    fn validation_documents_are_held_out() {
        let dir = tempfile::tempdir().unwrap();
        let spec = source(dir.path(), "a", &[20; 100]);
        let mut loader = Loader::open(&[spec], 5, 0.1).unwrap();
        let val = loader.validation_batch(1000, 19).unwrap();
        let val_docs: std::collections::HashSet<u32> = val.inputs.iter().map(|t| t / 100).collect();
        assert!((5..=20).contains(&val_docs.len()), "{}", val_docs.len());
        for _ in 0..50 {
            let b = loader.next_batch(4, 19, &[1.0]);
            assert!(b.inputs.iter().all(|t| !val_docs.contains(&(t / 100))));
        }
        assert_eq!(loader.validation_batch(1000, 19).unwrap(), val);
    }
}

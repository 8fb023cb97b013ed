//! Contamination as the paper measures it (Llama 3, §5.1.4): a token of an evaluation item is
//! contaminated when it is part of an 8-gram that occurs in the pretraining corpus, and an item
//! is contaminated when the share of its contaminated tokens reaches a threshold. Scores are then
//! reported on the clean and the contaminated items separately.
//!
//! The corpus is read as token shards (`*.tokens`, what `herd data tokenize` writes and
//! `herd pretrain` reads) or as text (`.jsonl`/`.jsonl.gz` with a `text` field, `.txt`),
//! tokenized with the evaluated model's tokenizer; the items are tokenized with it too, so the
//! shards must come from the same tokenizer. Each 8-gram is kept as a 64-bit hash.

use std::collections::HashSet;
use std::hash::BuildHasherDefault;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use herd_tokenizer::Tokenizer;
use serde_json::{json, Map, Value};

use crate::evaluate::TaskResult;
use crate::task::Task;

/// Tokens per n-gram (the paper's 8).
pub const NGRAM: usize = 8;

/// Most corpus tokens indexed: the hash set takes about 16 bytes per distinct 8-gram.
pub const MAX_CORPUS_TOKENS: usize = 2_000_000_000;

/// The hashes are already uniform: the set uses them as they are.
#[derive(Default)]
struct Identity(u64);

impl std::hash::Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys are hashed")
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// The 8-grams of a corpus.
pub struct CorpusNgrams {
    grams: HashSet<u64, BuildHasherDefault<Identity>>,
    /// Corpus tokens read.
    pub tokens: usize,
}

fn gram_hash(gram: &[u32]) -> u64 {
    let mut bytes = [0u8; NGRAM * 4];
    for (chunk, id) in bytes.chunks_exact_mut(4).zip(gram) {
        chunk.copy_from_slice(&id.to_le_bytes());
    }
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

impl CorpusNgrams {
    /// An empty index.
    pub fn new() -> CorpusNgrams {
        CorpusNgrams {
            grams: HashSet::default(),
            tokens: 0,
        }
    }

    /// Adds the 8-grams of one document.
    pub fn add(&mut self, tokens: &[u32]) {
        self.tokens += tokens.len();
        for gram in tokens.windows(NGRAM) {
            self.grams.insert(gram_hash(gram));
        }
    }

    /// Reads a corpus: a `*.tokens` shard, a `.jsonl`/`.jsonl.gz`/`.txt` file, or a folder of
    /// them. Text is tokenized with `tokenizer`; shards must have been made with it (their
    /// vocabulary size is checked).
    pub fn read(path: &Path, tokenizer: &Tokenizer) -> Result<CorpusNgrams> {
        let mut index = CorpusNgrams::new();
        for file in corpus_files(path)? {
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.ends_with(".tokens") {
                let shard = herd_data::shard::Shard::open(&file)?;
                if shard.vocab_size() as usize != tokenizer.vocab_size() {
                    bail!(
                        "{}: a shard of a {}-id vocabulary, but the model's tokenizer has {} ids \
                         (contamination compares token ids: give the shards of this tokenizer, \
                         or the corpus as text)",
                        file.display(),
                        shard.vocab_size(),
                        tokenizer.vocab_size()
                    );
                }
                for doc in 0..shard.n_docs() {
                    index.add(&shard.document(doc));
                    index.check_size(&file)?;
                }
            } else if name.ends_with(".txt") {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                index.add(&tokenizer.encode(&text, false)?);
            } else {
                for (i, doc) in crate::data::read_docs(&file)?.iter().enumerate() {
                    let Some(Value::String(text)) = doc.get("text") else {
                        bail!("{}: record {} has no `text` string", file.display(), i + 1);
                    };
                    index.add(&tokenizer.encode(text, false)?);
                    index.check_size(&file)?;
                }
            }
        }
        Ok(index)
    }

    fn check_size(&self, file: &Path) -> Result<()> {
        if self.tokens > MAX_CORPUS_TOKENS {
            bail!(
                "{}: the corpus passes {MAX_CORPUS_TOKENS} tokens; give a sample of it",
                file.display()
            );
        }
        Ok(())
    }

    /// The share of `tokens` that lie in some 8-gram of the corpus (0 for items shorter than
    /// an 8-gram).
    pub fn contaminated_share(&self, tokens: &[u32]) -> f64 {
        if tokens.len() < NGRAM {
            return 0.0;
        }
        let mut covered = vec![false; tokens.len()];
        for (start, gram) in tokens.windows(NGRAM).enumerate() {
            if self.grams.contains(&gram_hash(gram)) {
                covered[start..start + NGRAM].fill(true);
            }
        }
        covered.iter().filter(|&&c| c).count() as f64 / tokens.len() as f64
    }
}

impl Default for CorpusNgrams {
    fn default() -> Self {
        CorpusNgrams::new()
    }
}

/// Whether `path` is a corpus file: a token shard, JSON records or text.
fn is_corpus_file(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    name.ends_with(".tokens") || name.ends_with(".txt") || herd_util::records::is_json_data(path)
}

/// The files of a corpus path: the path itself, or the corpus files of a folder (recursively,
/// in name order).
fn corpus_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() && !is_corpus_file(path) {
        bail!(
            "{}: a corpus is *.tokens shards, JSON records with a `text` field (.jsonl, .json, \
             possibly .gz or .zst) or .txt",
            path.display()
        );
    }
    let files = herd_util::fs::list_files(&[path.to_path_buf()], &is_corpus_file)?;
    if files.is_empty() {
        bail!(
            "{}: no corpus files (*.tokens, .jsonl, .txt) in it",
            path.display()
        );
    }
    Ok(files)
}

/// A task's contamination report: the share of each evaluated item's tokens in corpus 8-grams,
/// the items at or over `threshold`, and every metric aggregated over the clean and the
/// contaminated items separately.
pub fn report(
    task: &Task,
    result: &TaskResult,
    corpus: &CorpusNgrams,
    tokenizer: &Tokenizer,
    threshold: f64,
) -> Result<Value> {
    let mut contaminated = Vec::with_capacity(result.samples.len());
    for sample in &result.samples {
        let text = task.decontamination_text(&sample.doc)?;
        let share = corpus.contaminated_share(&tokenizer.encode(&text, false)?);
        contaminated.push(share >= threshold);
    }
    let count = contaminated.iter().filter(|&&c| c).count();
    let mut subsets = Map::new();
    for (name, keep) in [("clean", false), ("contaminated", true)] {
        let mut metrics = Map::new();
        for pipeline in &task.filters {
            for spec in &task.metrics {
                let items: Vec<(f64, f64)> = result
                    .samples
                    .iter()
                    .zip(&contaminated)
                    .filter(|(_, &c)| c == keep)
                    .flat_map(|(s, _)| {
                        s.scores
                            .iter()
                            .filter(|(f, m, _, _)| f == &pipeline.name && *m == spec.metric)
                            .map(|(_, _, v, w)| (*v, *w))
                    })
                    .collect();
                if !items.is_empty() {
                    let key = format!("{},{}", spec.metric.name(), pipeline.name);
                    metrics.insert(key, json!(spec.aggregation.apply(&items)));
                }
            }
        }
        subsets.insert(name.into(), Value::Object(metrics));
    }
    let n = result.samples.len();
    Ok(json!({
        "ngram": NGRAM,
        "threshold": threshold,
        "corpus_tokens": corpus.tokens,
        "items": n,
        "contaminated_items": count,
        "contaminated_share": if n == 0 { 0.0 } else { count as f64 / n as f64 },
        "scores": subsets,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_corpus_8grams_are_contaminated() {
        let mut corpus = CorpusNgrams::new();
        corpus.add(&(100..120).collect::<Vec<u32>>());
        // 10 tokens, the first 8 of which are an 8-gram of the corpus.
        let item: Vec<u32> = (100..108).chain([1, 2]).collect();
        assert_eq!(corpus.contaminated_share(&item), 0.8);
        // Two overlapping corpus 8-grams cover 9 tokens.
        let item: Vec<u32> = (105..114).chain([7]).collect();
        assert_eq!(corpus.contaminated_share(&item), 0.9);
        // Seven corpus tokens in a row are no 8-gram.
        let item: Vec<u32> = (100..107).chain([1, 2, 3]).collect();
        assert_eq!(corpus.contaminated_share(&item), 0.0);
        assert_eq!(corpus.contaminated_share(&[100, 101]), 0.0);
    }
}

//! `herd data tokenize`: documents → token shards. Each document becomes
//! `<|begin_of_text|> text <|end_of_text|>` (the tokenizer's BOS and end-of-text ids), documents
//! are tokenized in parallel batches but written in input order, and a shard is closed once it
//! holds `shard_tokens` tokens.

use std::path::{Path, PathBuf};

use herd_tokenizer::Tokenizer;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::reader::{read_documents, split_lines, BadRecord, Document, Fields};
use crate::shard::ShardWriter;

/// Documents tokenized together (in parallel) before they are written.
const BATCH: usize = 256;

/// What a tokenize run wrote.
#[derive(Debug, Default)]
pub struct TokenizeSummary {
    /// The shards, in order.
    pub shards: Vec<PathBuf>,
    /// Documents written.
    pub documents: u64,
    /// Tokens written (with BOS/EOS).
    pub tokens: u64,
    /// Records that could not be read.
    pub bad: Vec<BadRecord>,
}

/// Options of a tokenize run.
pub struct TokenizeOptions<'a> {
    /// JSONL field holding the text.
    pub field: &'a str,
    /// Close a shard once it holds this many tokens.
    pub shard_tokens: u64,
    /// Cut each document at line breaks into documents of about this many bytes.
    pub split_chars: Option<usize>,
    /// Called after each batch with (documents, tokens, input bytes) so far.
    pub progress: &'a (dyn Fn(u64, u64, u64) + Sync),
}

/// Tokenizes the documents of `files` into shards `out/shard-00000.tokens`, ….
pub fn tokenize_files(
    files: &[PathBuf],
    tokenizer: &Tokenizer,
    out: &Path,
    options: &TokenizeOptions,
) -> Result<TokenizeSummary> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let bos = tokenizer.bos_id();
    let eos = tokenizer
        .token_id("<|end_of_text|>")
        .or_else(|| tokenizer.stop_ids().first().copied());
    let vocab = tokenizer.vocab_size() as u32;
    let mut summary = TokenizeSummary::default();
    let mut writer: Option<ShardWriter> = None;
    let mut batch: Vec<Document> = Vec::with_capacity(BATCH);
    let mut bytes = 0u64;
    let mut flush = |batch: &mut Vec<Document>, summary: &mut TokenizeSummary, bytes: u64| {
        let encoded: Vec<Vec<u32>> = batch
            .par_iter()
            .map(|doc| {
                let mut ids: Vec<u32> = bos.into_iter().collect();
                ids.extend(tokenizer.encode(&doc.text, false)?);
                ids.extend(eos);
                Ok(ids)
            })
            .collect::<Result<_>>()?;
        for ids in encoded {
            if writer.is_none() {
                let path = out.join(format!("shard-{:05}.tokens", summary.shards.len()));
                writer = Some(ShardWriter::create(&path, vocab)?);
            }
            let w = writer.as_mut().expect("just opened");
            w.push(&ids)?;
            summary.documents += 1;
            summary.tokens += ids.len() as u64;
            if w.n_tokens() >= options.shard_tokens {
                let done = writer.take().expect("open shard").finish()?;
                summary.shards.push(done);
            }
        }
        batch.clear();
        (options.progress)(summary.documents, summary.tokens, bytes);
        Ok::<_, Error>(())
    };
    let mut bad = Vec::new();
    for file in files {
        read_documents(file, &Fields::text(options.field), &mut bad, &mut |doc| {
            bytes += doc.text.len() as u64;
            let pieces = match options.split_chars {
                Some(n) => split_lines(&doc.text, n),
                None => vec![doc.text.as_str()],
            };
            for (i, piece) in pieces.iter().enumerate() {
                batch.push(Document {
                    id: format!("{}#{i}", doc.id),
                    text: piece.to_string(),
                    ..Document::default()
                });
                if batch.len() == BATCH {
                    flush(&mut batch, &mut summary, bytes)?;
                }
            }
            Ok(())
        })?;
    }
    flush(&mut batch, &mut summary, bytes)?;
    if let Some(w) = writer {
        summary.shards.push(w.finish()?);
    }
    summary.bad = bad;
    Ok(summary)
}

//! Writing a supervised model in fastText's `.bin` layout (the quality classifier's output).

use super::{MAGIC, VERSION};

/// What a supervised model file holds besides its weights.
pub struct Dictionary<'a> {
    /// Words (with `</s>`) then labels, each `(text, count)`.
    pub words: &'a [(String, i64)],
    /// Labels (`__label__…`), each `(text, count)`.
    pub labels: &'a [(String, i64)],
    /// Embedding size.
    pub dim: usize,
    /// Word n-gram length (1: words only).
    pub word_ngrams: i32,
    /// Hash buckets of the word n-grams.
    pub bucket: i32,
    /// Training epochs (recorded only).
    pub epochs: i32,
}

/// The bytes of a fastText supervised softmax model without character n-grams (`minn` =
/// `maxn` = 0): `input` is `(words + bucket) × dim`, `output` `labels × dim`, row-major. fastText
/// itself reads the file; so does [`FastTextModel::from_bytes`].
pub fn write_supervised(dict: &Dictionary, input: &[f32], output: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    let i32s = |out: &mut Vec<u8>, v: &[i32]| v.iter().for_each(|x| out.extend(x.to_le_bytes()));
    i32s(&mut out, &[MAGIC, VERSION]);
    // dim, ws, epoch, minCount, neg, wordNgrams, loss (softmax), model (supervised), bucket,
    // minn, maxn, lrUpdateRate, then t.
    let dim = dict.dim as i32;
    i32s(
        &mut out,
        &[
            dim,
            5,
            dict.epochs,
            1,
            5,
            dict.word_ngrams,
            3,
            3,
            dict.bucket,
            0,
            0,
            100,
        ],
    );
    out.extend(1e-4f64.to_le_bytes());
    let size = (dict.words.len() + dict.labels.len()) as i32;
    i32s(
        &mut out,
        &[size, dict.words.len() as i32, dict.labels.len() as i32],
    );
    let ntokens: i64 = dict.words.iter().map(|w| w.1).sum();
    out.extend(ntokens.to_le_bytes());
    out.extend((-1i64).to_le_bytes());
    for (entries, kind) in [(dict.words, 0u8), (dict.labels, 1u8)] {
        for (text, count) in entries {
            out.extend(text.as_bytes());
            out.push(0);
            out.extend(count.to_le_bytes());
            out.push(kind);
        }
    }
    for (quant, rows, data) in [
        (0u8, dict.words.len() + dict.bucket as usize, input),
        (0u8, dict.labels.len(), output),
    ] {
        out.push(quant);
        out.extend((rows as i64).to_le_bytes());
        out.extend((dict.dim as i64).to_le_bytes());
        data.iter().for_each(|v| out.extend(v.to_le_bytes()));
    }
    out
}

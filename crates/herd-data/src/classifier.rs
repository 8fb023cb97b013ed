//! Model-based quality classification (paper §3.1.1: "fasttext … trained to recognize if a given
//! text would be referenced by Wikipedia"): a fastText-style linear classifier over words and
//! hashed word n-grams, trained here and saved as a fastText `.bin` (softmax loss, no character
//! n-grams) that fastText itself and [`crate::fasttext`] read.
//!
//! Training is fastText's supervised SGD, single-threaded so a seed gives the same model:
//! the hidden vector is the mean of the example's input rows; the softmax gradient updates the
//! output rows and, divided by the number of rows, each input row; the learning rate falls
//! linearly to 0 over all epochs' tokens. Input rows start uniform in ±1/dim, output rows at 0.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fasttext::{write_supervised, Dictionary, FastTextModel};
use herd_util::seeded::{shuffle, uniform};

/// fastText's label prefix.
const LABEL_PREFIX: &str = "__label__";

/// Hyper-parameters (fastText's supervised defaults, with word bigrams and a smaller table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Embedding size.
    pub dim: usize,
    /// Passes over the data.
    pub epochs: usize,
    /// Starting learning rate.
    pub lr: f32,
    /// Word n-grams (2: words and bigrams).
    pub word_ngrams: i32,
    /// Hash buckets for the n-grams.
    pub bucket: i32,
    /// Words seen fewer times are left out of the vocabulary.
    pub min_count: i64,
    /// Seed of the initialisation and the example order.
    pub seed: u64,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        ClassifierConfig {
            dim: 32,
            epochs: 5,
            lr: 0.1,
            word_ngrams: 2,
            bucket: 200_000,
            min_count: 1,
            seed: 1,
        }
    }
}

impl ClassifierConfig {
    /// Checks every setting: sizes that fit in memory, a finite positive rate, and buckets
    /// whenever there are word n-grams to hash into them.
    pub fn validate(&self) -> std::result::Result<(), String> {
        use herd_util::check::{at_least, finite_within, within};
        within("dim", self.dim, 1, 1024)?;
        within("epochs", self.epochs, 1, 10_000)?;
        finite_within("lr", f64::from(self.lr), f64::MIN_POSITIVE, 10.0)?;
        within("word_ngrams", self.word_ngrams, 1, 8)?;
        within("bucket", self.bucket, 0, 20_000_000)?;
        at_least("min_count", self.min_count, 1)?;
        if self.bucket == 0 && self.word_ngrams > 1 {
            return Err(format!(
                "`bucket` is 0 but `word_ngrams` is {}: word n-grams need hash buckets \
                 (set word_ngrams = 1 for words alone)",
                self.word_ngrams
            ));
        }
        Ok(())
    }
}

/// A labelled example: label (without the prefix) and text.
pub type Example = (String, String);

/// Trains a classifier on `examples` and returns the fastText file's bytes.
pub fn train(examples: &[Example], config: &ClassifierConfig) -> Result<Vec<u8>> {
    config
        .validate()
        .map_err(|m| herd_util::FileError::setting("the classifier settings (--set)", m))?;
    let nowhere = Path::new("<training>");
    let mut word_counts: HashMap<&str, i64> = HashMap::new();
    let mut label_counts: HashMap<&str, i64> = HashMap::new();
    for (label, text) in examples {
        *label_counts.entry(label).or_default() += 1;
        for w in text.split_whitespace() {
            *word_counts.entry(w).or_default() += 1;
        }
    }
    if label_counts.len() < 2 {
        return Err(Error::format(
            nowhere,
            "a classifier needs examples of at least two labels",
        ));
    }
    let mut words: Vec<(String, i64)> = word_counts
        .into_iter()
        .filter(|(w, c)| *c >= config.min_count && !w.starts_with(LABEL_PREFIX))
        .map(|(w, c)| (w.to_string(), c))
        .collect();
    words.push(("</s>".into(), examples.len() as i64));
    // fastText's order: by count, most frequent first (ties by text, for determinism).
    words.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut labels: Vec<(String, i64)> = label_counts
        .into_iter()
        .map(|(l, c)| (format!("{LABEL_PREFIX}{l}"), c))
        .collect();
    labels.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let dict = Dictionary {
        words: &words,
        labels: &labels,
        dim: config.dim,
        word_ngrams: config.word_ngrams,
        bucket: config.bucket,
        epochs: config.epochs as i32,
    };
    let rows = words.len() + config.bucket as usize;
    let mut rng = config.seed;
    let bound = 1.0 / config.dim as f32;
    let mut input: Vec<f32> = (0..rows * config.dim)
        .map(|_| uniform(&mut rng, bound))
        .collect();
    let mut output = vec![0f32; labels.len() * config.dim];
    // The dictionary's own tokenization, from a model file with these (untrained) weights.
    let shape = FastTextModel::from_bytes(&write_supervised(&dict, &input, &output), nowhere)?;
    let label_id: HashMap<String, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, (l, _))| (l.clone(), i))
        .collect();
    let encoded: Vec<(usize, Vec<i32>)> = examples
        .iter()
        .map(|(l, t)| (label_id[&format!("{LABEL_PREFIX}{l}")], shape.line_ids(t)))
        .collect();
    let total: usize = encoded.iter().map(|(_, ids)| ids.len()).sum::<usize>() * config.epochs;
    let mut seen = 0usize;
    let dim = config.dim;
    let mut hidden = vec![0f32; dim];
    let mut grad = vec![0f32; dim];
    let mut scores = vec![0f32; labels.len()];
    let mut order: Vec<usize> = (0..encoded.len()).collect();
    for _ in 0..config.epochs {
        shuffle(&mut order, &mut rng);
        for &e in &order {
            let (target, ids) = &encoded[e];
            seen += ids.len();
            if ids.is_empty() {
                continue;
            }
            let lr = config.lr * (1.0 - seen as f32 / total as f32).max(0.0);
            hidden.iter_mut().for_each(|h| *h = 0.0);
            for &id in ids {
                let row = &input[id as usize * dim..(id as usize + 1) * dim];
                hidden.iter_mut().zip(row).for_each(|(h, v)| *h += v);
            }
            let scale = 1.0 / ids.len() as f32;
            hidden.iter_mut().for_each(|h| *h *= scale);
            for (j, s) in scores.iter_mut().enumerate() {
                *s = output[j * dim..(j + 1) * dim]
                    .iter()
                    .zip(&hidden)
                    .map(|(w, h)| w * h)
                    .sum();
            }
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let z: f32 = scores.iter().map(|s| (s - max).exp()).sum();
            grad.iter_mut().for_each(|g| *g = 0.0);
            for (j, s) in scores.iter().enumerate() {
                let p = (s - max).exp() / z;
                let alpha = lr * (f32::from(u8::from(j == *target)) - p);
                let row = &mut output[j * dim..(j + 1) * dim];
                for ((g, w), h) in grad.iter_mut().zip(row.iter_mut()).zip(&hidden) {
                    *g += alpha * *w;
                    *w += alpha * h;
                }
            }
            for &id in ids {
                let row = &mut input[id as usize * dim..(id as usize + 1) * dim];
                row.iter_mut().zip(&grad).for_each(|(v, g)| *v += g * scale);
            }
        }
    }
    Ok(write_supervised(&dict, &input, &output))
}

/// Share of `examples` whose most likely label is theirs.
pub fn accuracy(model: &FastTextModel, examples: &[Example]) -> f64 {
    let correct = examples
        .iter()
        .filter(|(label, text)| {
            model
                .predict(&text.replace(['\n', '\r'], " "), 1)
                .first()
                .is_some_and(|(l, _)| l.strip_prefix(LABEL_PREFIX) == Some(label.as_str()))
        })
        .count();
    correct as f64 / examples.len().max(1) as f64
}

/// Writes `bytes` to `path` atomically.
pub fn save(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two kinds of text told apart by their words: the held-out accuracy is high, and the
    /// saved file reads back with the same predictions.
    #[test]
    fn learns_a_separable_labelling() {
        let good = [
            "the river carried the boats to the sea",
            "a careful study of the old records",
            "she wrote the history of the town",
            "the theorem follows from the lemma above",
        ];
        let bad = [
            "click here buy now cheap deals",
            "subscribe to our newsletter today",
            "accept all cookies privacy policy",
            "login register cart checkout menu",
        ];
        let mut examples = Vec::new();
        for i in 0..200 {
            let (g, b) = (good[i % 4], bad[(i / 4) % 4]);
            examples.push(("hq".to_string(), format!("{g} {}", good[(i + 1) % 4])));
            examples.push(("lq".to_string(), format!("{b} {}", bad[(i + 3) % 4])));
        }
        let (train_set, held) = examples.split_at(320);
        let bytes = train(
            train_set,
            &ClassifierConfig {
                epochs: 10,
                ..Default::default()
            },
        )
        .unwrap();
        let model = FastTextModel::from_bytes(&bytes, Path::new("t.bin")).unwrap();
        assert!(accuracy(&model, held) > 0.95, "{}", accuracy(&model, held));
        let again = train(
            train_set,
            &ClassifierConfig {
                epochs: 10,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(bytes, again, "the same seed gives the same model");
    }

    #[test]
    fn settings_that_make_no_sense_are_refused_by_name() {
        let examples = vec![
            ("a".to_string(), "x".to_string()),
            ("b".to_string(), "y".to_string()),
        ];
        for (config, key) in [
            (
                ClassifierConfig {
                    bucket: 0,
                    ..Default::default()
                },
                "bucket",
            ),
            (
                ClassifierConfig {
                    bucket: -1,
                    ..Default::default()
                },
                "bucket",
            ),
            (
                ClassifierConfig {
                    lr: f32::NAN,
                    ..Default::default()
                },
                "lr",
            ),
            (
                ClassifierConfig {
                    dim: 0,
                    ..Default::default()
                },
                "dim",
            ),
            (
                ClassifierConfig {
                    word_ngrams: 0,
                    ..Default::default()
                },
                "word_ngrams",
            ),
        ] {
            let err = train(&examples, &config).unwrap_err().to_string();
            assert!(
                err.contains(&format!("`{key}`")) && err.contains("--set"),
                "{err}"
            );
        }
        let words_only = ClassifierConfig {
            bucket: 0,
            word_ngrams: 1,
            ..Default::default()
        };
        let model =
            FastTextModel::from_bytes(&train(&examples, &words_only).unwrap(), Path::new("t.bin"));
        assert!(
            model.unwrap().predict("x", 1).len() == 1,
            "words alone need no buckets"
        );
    }
}

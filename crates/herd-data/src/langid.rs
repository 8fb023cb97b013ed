//! Language identification (paper §3.1.1: fastText, 176 languages) with fastText's own
//! models, `lid.176.ftz` (product-quantized) or `.bin`, predicted as fastText does
//! ([`crate::fasttext`]; the test compares with fastText itself on 5,800 sentences). A document
//! is one fastText line: its line breaks become spaces, as datatrove's language filter does.

use std::path::Path;

use crate::error::Result;
use crate::fasttext::FastTextModel;

/// fastText's label prefix.
const LABEL_PREFIX: &str = "__label__";

/// A loaded language-id model.
pub struct LanguageId {
    model: FastTextModel,
}

/// A language and its probability.
#[derive(Debug, Clone, PartialEq)]
pub struct Language {
    /// The label without fastText's `__label__` prefix (`en`, `zh`, …).
    pub lang: String,
    /// Probability in [0, 1].
    pub prob: f32,
}

impl LanguageId {
    /// Loads a fastText model file.
    pub fn load(path: &Path) -> Result<LanguageId> {
        Ok(LanguageId {
            model: FastTextModel::load(path)?,
        })
    }

    /// The `k` most likely languages of `text`, most likely first (none for empty text).
    pub fn predict(&self, text: &str, k: usize) -> Vec<Language> {
        let line = text.replace(['\n', '\r'], " ");
        self.model
            .predict(&line, k)
            .into_iter()
            .map(|(label, prob)| Language {
                lang: label
                    .strip_prefix(LABEL_PREFIX)
                    .unwrap_or(&label)
                    .to_string(),
                prob,
            })
            .collect()
    }
}

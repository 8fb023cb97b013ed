//! The stages a pipeline file names (`[[stages]] kind = "…"`), built from their TOML tables.
//! A document stage looks at one document at a time; a corpus stage (de-duplication, token
//! divergence) needs the whole task's documents (it runs as its own pass, see [`super::run`]).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use crate::fasttext::FastTextModel;
use crate::filters::dirty_words::DirtyWords;
use crate::filters::gopher::GopherQuality;
use crate::filters::repetition::GopherRepetition;
use crate::filters::Verdict;
use crate::langid::LanguageId;
use crate::minhash::{MinHashConfig, MinHasher};
use crate::pii::Pii;
use crate::token_kl::TokenKlConfig;
use crate::url_filter::UrlFilter;

/// A document moving through the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    /// Where it came from (`file:line`, or the file).
    pub id: String,
    /// Its text.
    pub text: String,
    /// What the reader and the stages found (source, url, date, language, PII counts …),
    /// written beside the text.
    pub meta: Map<String, Value>,
}

impl Doc {
    /// A metadata field that is text (`url`, `date`).
    pub fn meta_str(&self, key: &str) -> Option<&str> {
        self.meta.get(key).and_then(Value::as_str)
    }
}

/// A stage that decides on one document at a time.
pub enum DocStage {
    /// Documents whose URL (the `url` field; else the id, when it is a URL) is on a domain
    /// block list.
    UrlFilter(UrlFilter),
    /// HTML → main text ([`crate::extract`]); pages without main text are removed.
    Extract,
    /// Project Gutenberg header and footer removed.
    Gutenberg,
    /// E-mails, IPs and phone numbers replaced.
    Pii(Pii),
    /// fastText language id; documents outside `languages` or below `min_prob` are removed.
    Langid {
        /// The model.
        model: Box<LanguageId>,
        /// Languages kept (all when empty).
        languages: Vec<String>,
        /// Lowest probability kept.
        min_prob: f32,
    },
    /// A quality classifier (`herd data train-classifier`): the probability of `label` is
    /// written as `quality`; documents below `min_prob` are removed.
    Quality {
        /// The fastText model.
        model: Box<FastTextModel>,
        /// The label that means high quality (without `__label__`).
        label: String,
        /// Lowest probability kept.
        min_prob: f32,
    },
    /// Gopher's quality rules.
    GopherQuality(GopherQuality),
    /// Gopher's repetition rules.
    GopherRepetition(GopherRepetition),
    /// Dirty-word counting.
    DirtyWords(DirtyWords),
}

/// A stage over all of a task's documents.
pub enum CorpusStage {
    /// One document per URL, the newest ([`crate::url_dedup`]).
    Url,
    /// Documents whose text repeats an earlier one's exactly.
    Exact,
    /// Near-duplicates by MinHash LSH.
    MinHash(MinHasher),
    /// Lines seen more than `max_occurrences` times removed.
    Lines {
        /// Occurrences allowed.
        max_occurrences: u32,
    },
    /// Documents whose token distribution diverges from the task's ([`crate::token_kl`]).
    TokenKl(TokenKlConfig),
}

impl CorpusStage {
    /// The reason its removals are counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            CorpusStage::Url => "url_dedup",
            CorpusStage::Exact => "exact_dedup",
            CorpusStage::MinHash(_) => "minhash",
            CorpusStage::Lines { .. } => "line_dedup_empty",
            CorpusStage::TokenKl(_) => "token_kl",
        }
    }
}

/// Any stage.
pub enum Stage {
    /// Per document.
    Doc(DocStage),
    /// Over the whole task.
    Corpus(CorpusStage),
}

impl DocStage {
    /// Applies the stage to `doc`.
    pub fn apply(&self, doc: &mut Doc) -> Verdict {
        match self {
            DocStage::UrlFilter(f) => f.check(doc.meta_str("url").unwrap_or(&doc.id)),
            DocStage::Extract => {
                doc.text = crate::extract::extract_str(&doc.text);
                if doc.text.trim().is_empty() {
                    Verdict::Drop("extract_empty")
                } else {
                    Verdict::Keep
                }
            }
            DocStage::Gutenberg => {
                doc.text = crate::gutenberg::strip_boilerplate(&doc.text).to_string();
                Verdict::Keep
            }
            DocStage::Pii(pii) => {
                let (text, n) = pii.redact(&doc.text);
                if n.emails + n.ips + n.phones > 0 {
                    doc.meta.insert(
                        "pii".into(),
                        json!({"emails": n.emails, "ips": n.ips, "phones": n.phones}),
                    );
                    doc.text = text;
                }
                Verdict::Keep
            }
            DocStage::Langid {
                model,
                languages,
                min_prob,
            } => {
                let Some(top) = model.predict(&doc.text, 1).into_iter().next() else {
                    return Verdict::Drop("language");
                };
                doc.meta.insert("lang".into(), json!(top.lang));
                doc.meta.insert("lang_prob".into(), json!(top.prob));
                let wanted = languages.is_empty() || languages.contains(&top.lang);
                if wanted && top.prob >= *min_prob {
                    Verdict::Keep
                } else {
                    Verdict::Drop("language")
                }
            }
            DocStage::Quality {
                model,
                label,
                min_prob,
            } => {
                let wanted = format!("__label__{label}");
                let p = model
                    .predict(&doc.text.replace(['\n', '\r'], " "), usize::MAX)
                    .into_iter()
                    .find(|(l, _)| *l == wanted)
                    .map_or(0.0, |(_, p)| p);
                doc.meta.insert("quality".into(), json!(p));
                if p >= *min_prob {
                    Verdict::Keep
                } else {
                    Verdict::Drop("quality")
                }
            }
            DocStage::GopherQuality(g) => g.check(&doc.text),
            DocStage::GopherRepetition(g) => g.check(&doc.text),
            DocStage::DirtyWords(d) => d.check(&doc.text),
        }
    }
}

/// A probability setting: between 0 and 1.
fn probability(key: &str, value: f32) -> Result<(), String> {
    herd_util::check::finite_within(key, f64::from(value), 0.0, 1.0)
}

/// Reads a section's fields over their defaults.
fn fields<T: DeserializeOwned>(table: toml::Table) -> Result<T, String> {
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_string())
}

/// A string-list or number field taken out of `table`.
fn take<T: DeserializeOwned>(table: &mut toml::Table, key: &str, default: T) -> Result<T, String> {
    match table.remove(key) {
        Some(v) => v
            .try_into()
            .map_err(|e: toml::de::Error| format!("{key}: {}", e.message())),
        None => Ok(default),
    }
}

impl Stage {
    /// The stage a `[[stages]]` table describes, and the files it read (models, lists);
    /// `langid_model` is the model a `langid` stage without `model` uses.
    pub fn from_table(
        mut table: toml::Table,
        langid_model: &Path,
    ) -> Result<(Stage, Vec<PathBuf>), String> {
        let kind: String = take(&mut table, "kind", String::new())?;
        let mut files = Vec::new();
        let stage = match kind.as_str() {
            "url_filter" => {
                let lists: Vec<PathBuf> = take(&mut table, "domains", Vec::new())?;
                let lists: Vec<PathBuf> = lists.iter().map(|p| crate::reader::expand_home(p)).collect();
                let filter = UrlFilter::from_files(&lists).map_err(|e| e.to_string())?;
                files.extend(lists);
                Stage::Doc(DocStage::UrlFilter(filter))
            }
            "extract" => Stage::Doc(DocStage::Extract),
            "gutenberg" => Stage::Doc(DocStage::Gutenberg),
            "pii" => Stage::Doc(DocStage::Pii(Pii::default())),
            "langid" => {
                let model: Option<PathBuf> = take(&mut table, "model", None)?;
                let model = model.unwrap_or_else(|| langid_model.to_path_buf());
                let languages = take(&mut table, "languages", Vec::new())?;
                let min_prob = take(&mut table, "min_prob", 0.65f32)?;
                probability("min_prob", min_prob)?;
                files.push(model.clone());
                let model = LanguageId::load(&model).map_err(|e| {
                    format!("{e} (`herd fetch lid.176.ftz` downloads the model)")
                })?;
                Stage::Doc(DocStage::Langid {
                    model: Box::new(model),
                    languages,
                    min_prob,
                })
            }
            "quality" => {
                let path: PathBuf = take(&mut table, "model", PathBuf::new())?;
                let model = FastTextModel::load(&path).map_err(|e| e.to_string())?;
                files.push(path);
                let min_prob = take(&mut table, "min_prob", 0.0f32)?;
                probability("min_prob", min_prob)?;
                Stage::Doc(DocStage::Quality {
                    model: Box::new(model),
                    label: take(&mut table, "label", "hq".to_string())?,
                    min_prob,
                })
            }
            "gopher_quality" => {
                let filter: GopherQuality = fields(table.clone())?;
                filter.validate()?;
                Stage::Doc(DocStage::GopherQuality(filter))
            }
            "gopher_repetition" => {
                let filter: GopherRepetition = fields(table.clone())?;
                filter.validate()?;
                Stage::Doc(DocStage::GopherRepetition(filter))
            }
            "dirty_words" => {
                let max_matches = take(&mut table, "max_matches", 1usize)?;
                herd_util::check::at_least("max_matches", max_matches, 1)
                    ?;
                let list: Option<PathBuf> = take(&mut table, "list", None)?;
                let words = match list {
                    Some(path) => {
                        let words = DirtyWords::from_file(&path, max_matches)
                            .map_err(|e| e.to_string())?;
                        files.push(path);
                        words
                    }
                    None => DirtyWords::english(max_matches),
                };
                Stage::Doc(DocStage::DirtyWords(words))
            }
            "url_dedup" => Stage::Corpus(CorpusStage::Url),
            "exact_dedup" => Stage::Corpus(CorpusStage::Exact),
            "minhash" => {
                let config: MinHashConfig = fields(table.clone())?;
                config.validate()?;
                Stage::Corpus(CorpusStage::MinHash(MinHasher::new(config)))
            }
            "line_dedup" => {
                let max_occurrences = take(&mut table, "max_occurrences", 6u32)?;
                herd_util::check::at_least("max_occurrences", max_occurrences, 1)
                    ?;
                Stage::Corpus(CorpusStage::Lines { max_occurrences })
            }
            "token_kl" => {
                let config: TokenKlConfig = fields(table.clone())?;
                config.validate()?;
                Stage::Corpus(CorpusStage::TokenKl(config))
            }
            other => {
                return Err(format!(
                "unknown stage kind {other:?}: url_filter, extract, gutenberg, pii, langid, quality, \
                     gopher_quality, gopher_repetition, dirty_words, url_dedup, exact_dedup, minhash, \
                     line_dedup, token_kl"
            ))
            }
        };
        let consumed = matches!(
            kind.as_str(),
            "gopher_quality" | "gopher_repetition" | "minhash" | "token_kl"
        );
        if !consumed {
            if let Some(key) = table.keys().next() {
                return Err(format!("unknown field {key:?}"));
            }
        }
        Ok((stage, files))
    }
}

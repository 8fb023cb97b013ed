//! `herd data run`: a curation pipeline from a TOML file — inputs, output folder, and
//! `[[stages]]` in order:
//!
//! ```toml
//! [input]
//! paths = ["crawl/"]          # .warc/.html/.jsonl/.json/.txt (each possibly .gz), .jsonl.zst, .parquet;
//!                             # folders recursively; ~/ is home
//! text_field = "text"         # record fields: the text, and the optional URL and crawl date
//! url_field = "url"
//! date_field = "date"         # ISO 8601 text (C4: "timestamp"); WARC records use WARC-Date
//! [output]
//! dir = "data/curated"
//! removed = false             # true: removed documents too, in OUT/removed/ with `removed_by`
//! [[stages]]
//! kind = "url_filter"         # domains = ["ut1/adult/domains", …] (plain or .gz)
//! [[stages]]
//! kind = "url_dedup"          # one document per URL: the newest (then the first read)
//! [[stages]]
//! kind = "extract"            # HTML → main text (for .warc/.html inputs or an HTML field)
//! [[stages]]
//! kind = "langid"             # model = "…" (default: lid.176.ftz), languages = ["en"], min_prob = 0.65
//! [[stages]]
//! kind = "gopher_quality"     # any threshold of filters::gopher::GopherQuality
//! [[stages]]
//! kind = "minhash"            # ngram = 5, bands = 14, rows = 8, seed = 1
//! ```
//!
//! [`run`] executes it for one task of `--tasks N` (input files `i` with `i mod N = rank`, so
//! the same file runs as a Slurm array job) in phases: the document stages stream, and each
//! de-duplication stage starts a new phase over everything the task kept so far. Every phase
//! writes one gzipped JSONL file per input file, atomically, with its counts beside it; a run
//! started again skips the files already written, so a killed run finishes with exactly the
//! documents of an uninterrupted one. De-duplication is within a task (the paper de-duplicates
//! lines within buckets of 30M documents; a task is such a bucket).

mod io;
pub mod run;
pub mod stage;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use run::{run, Counts, Progress, RunOptions, Summary};
pub use stage::{CorpusStage, Doc, DocStage, Stage};

use crate::error::{Error, Result};
use crate::reader::{expand_home, Fields};

/// A pipeline read from its file.
pub struct Pipeline {
    /// Input files and folders.
    pub inputs: Vec<PathBuf>,
    /// Record fields holding the text, URL and date.
    pub fields: Fields,
    /// Output folder: `docs/` (the kept documents), `counts/` and the summary.
    pub out: PathBuf,
    /// Whether removed documents are written too (`OUT/removed/`, with the reason).
    pub keep_removed: bool,
    /// The stages with their kind names, in order.
    pub stages: Vec<(String, Stage)>,
    /// Per stage, a hash of its settings and of the files it read: a run's output records
    /// them, so output made by other settings is never taken for this pipeline's.
    pub stage_fingerprints: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineFile {
    input: InputSection,
    output: OutputSection,
    #[serde(default)]
    stages: Vec<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSection {
    paths: Vec<PathBuf>,
    #[serde(default = "text_field")]
    text_field: String,
    #[serde(default = "url_field")]
    url_field: String,
    #[serde(default = "date_field")]
    date_field: String,
}

fn text_field() -> String {
    Fields::default().text
}

fn url_field() -> String {
    Fields::default().url
}

fn date_field() -> String {
    Fields::default().date
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputSection {
    dir: PathBuf,
    #[serde(default)]
    removed: bool,
}

impl Pipeline {
    /// Reads a pipeline file; `langid_model` is the default model of `langid` stages. Relative
    /// paths are taken from the working directory.
    pub fn load(path: &Path, langid_model: &Path) -> Result<Pipeline> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let file: PipelineFile =
            toml::from_str(&text).map_err(|e| Error::format(path, e.to_string()))?;
        let mut stages = Vec::new();
        let mut stage_fingerprints = Vec::new();
        for (i, table) in file.stages.into_iter().enumerate() {
            let kind = table
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or("?")
                .to_string();
            let settings = serde_json::to_value(&table).expect("TOML is JSON");
            let (stage, files) = Stage::from_table(table, langid_model)
                .map_err(|m| Error::format(path, format!("[[stages]] #{} ({kind}): {m}", i + 1)))?;
            let contents: Vec<String> = files
                .iter()
                .map(|f| herd_util::fingerprint::of_file(f))
                .collect::<std::result::Result<_, _>>()?;
            stage_fingerprints.push(herd_util::fingerprint::of_json(
                &serde_json::json!({"settings": settings, "files": contents}),
            ));
            stages.push((kind, stage));
        }
        Ok(Pipeline {
            inputs: file.input.paths.iter().map(|p| expand_home(p)).collect(),
            fields: Fields {
                text: file.input.text_field,
                url: file.input.url_field,
                date: file.input.date_field,
            },
            out: expand_home(&file.output.dir),
            keep_removed: file.output.removed,
            stages,
            stage_fingerprints,
        })
    }
}

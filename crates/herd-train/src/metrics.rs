//! The metrics file of a run (`metrics.jsonl`): one JSON object per optimizer step. On resume the
//! lines after the checkpoint's step are dropped, so the file reads as one uninterrupted run.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What is logged after a step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Steps completed (this step is `step − 1`, 0-based).
    pub step: u64,
    /// Mean training loss of the step's batch (nats per token); NaN (JSON `null`) when the step
    /// was not finite.
    #[serde(deserialize_with = "null_as_nan")]
    pub loss: f64,
    /// Learning rate of the update.
    pub lr: f64,
    /// Global gradient norm before clipping.
    #[serde(deserialize_with = "null_as_nan")]
    pub grad_norm: f64,
    /// Rows × tokens per row of the step.
    pub seq_len: usize,
    /// Rows of the step.
    pub batch_rows: usize,
    /// Training tokens consumed so far.
    pub tokens: u64,
    /// Training tokens per second of this step.
    pub tokens_per_s: f64,
    /// Model FLOP utilisation against the configured peak.
    pub mfu: f64,
    /// Mean validation loss, when evaluated after this step.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_loss: Option<f64>,
    /// The step was skipped: its loss or gradient was not finite.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub skipped: bool,
    /// What else a stage reports (post-training: reward accuracy, margins), by name; `null`
    /// for a value that was not finite.
    #[serde(flatten, default)]
    pub extra: BTreeMap<String, Option<f64>>,
}

/// JSON has no NaN: serde_json writes it as `null`, which reads back as NaN.
fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// An append-only metrics file.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens `path`, keeping only the lines of steps `≤ keep_through` (all lines are dropped
    /// for a fresh run with `keep_through = 0`).
    pub fn open(path: &Path, keep_through: u64) -> Result<MetricsLog> {
        let kept = read(path)?
            .into_iter()
            .filter(|m| m.step <= keep_through)
            .map(|m| serde_json::to_string(&m).expect("json") + "\n")
            .collect::<String>();
        herd_util::fs::write_atomic(path, kept.as_bytes())?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one step's line.
    pub fn log(&mut self, metrics: &StepMetrics) -> Result<()> {
        let line = serde_json::to_string(metrics).expect("json") + "\n";
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| Error::io(&self.path, e))
    }
}

/// Every line of a metrics file (none when it does not exist).
pub fn read(path: &Path) -> Result<Vec<StepMetrics>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut out = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        // A line cut by a kill is the last one; it is dropped like any step after a checkpoint.
        match serde_json::from_str(&line) {
            Ok(m) => out.push(m),
            Err(_) => eprintln!(
                "{}:{}: unreadable metrics line dropped",
                path.display(),
                n + 1
            ),
        }
    }
    Ok(out)
}

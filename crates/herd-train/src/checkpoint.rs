//! Training checkpoints: `step-00000100/` holding the model as an HF folder
//! (`config.json`, `model.safetensors`, the tokenizer; `herd generate` and transformers load it
//! as is), the optimizer moments (`optimizer.safetensors`) and the trainer's state
//! (`trainer.json`: step, tokens, data cursor, counters). A checkpoint is written into a hidden
//! temporary folder and renamed into place, so a kill at any moment leaves only whole
//! checkpoints; the oldest beyond `keep_last` are removed afterwards.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use herd_model::checkpoint::hf;
use herd_model::{LlamaConfig, Weights};
use herd_util::fs::{write_atomic, Existing, RunDir};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::loader::Cursor;
use crate::trainer::RunOptions;

/// Everything about a run besides tensors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: u64,
    /// Training tokens consumed (inputs).
    pub tokens: u64,
    /// The data loader's position.
    pub cursor: Cursor,
    /// Steps skipped for a non-finite loss or gradient.
    pub skipped_steps: u64,
    /// Non-finite steps in a row at the end.
    pub bad_in_a_row: u32,
    /// Annealing checkpoints taken so far (their folders), for the final average.
    pub anneal_checkpoints: Vec<PathBuf>,
}

/// Checks and claims the output folder of a training run before anything is written there:
/// a run of the same `command` from the same `fingerprint` (recipe, data, base model) is
/// continued with `--resume`; any other earlier run is refused unless `--overwrite` deletes it.
/// A checkpoint is therefore never continued with other data or settings than it was made with.
pub fn open_run(
    options: &RunOptions,
    command: &str,
    fingerprint: &serde_json::Value,
) -> Result<()> {
    let existing = Existing::from_flags(options.resume, options.overwrite)?;
    RunDir::open(&options.out, command, fingerprint, existing)?;
    Ok(())
}

/// The folder of the checkpoint after `step` steps.
pub fn step_dir(root: &Path, step: u64) -> PathBuf {
    root.join(format!("step-{step:08}"))
}

/// Saves the model (and `tokenizer`, with the `tokenizer_config.json` beside it if any) as an
/// HF folder at `dir`, atomically.
pub fn save_model(
    dir: &Path,
    config: &LlamaConfig,
    weights: &Weights,
    tokenizer: &Path,
) -> Result<()> {
    save_dir(dir, |tmp| write_model(tmp, config, weights, tokenizer))
}

fn write_model(
    dir: &Path,
    config: &LlamaConfig,
    weights: &Weights,
    tokenizer: &Path,
) -> Result<()> {
    hf::save(dir, config, weights, DType::F32, usize::MAX)?;
    let bytes = std::fs::read(tokenizer).map_err(|e| Error::io(tokenizer, e))?;
    let name = tokenizer
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "tokenizer.model".into());
    write_atomic(&dir.join(&name), &bytes)?;
    let read = herd_tokenizer::Tokenizer::from_path(tokenizer)
        .map_err(|e| Error::Checkpoint(format!("{}: {e}", tokenizer.display())))?;
    if name == "tokenizer.json" {
        // An HF tokenizer's settings and chat template travel with it.
        let config = tokenizer.with_file_name("tokenizer_config.json");
        if config.is_file() {
            let bytes = std::fs::read(&config).map_err(|e| Error::io(&config, e))?;
            write_atomic(&dir.join("tokenizer_config.json"), &bytes)?;
        }
    } else {
        // Meta's tiktoken file, which transformers cannot read: its HF form goes beside it.
        read.save_hf(dir)
            .map_err(|e| Error::Checkpoint(format!("{}: {e}", tokenizer.display())))?;
    }
    write_special_ids(dir, &read)
}

/// Puts the tokenizer's BOS and end-of-generation ids into `config.json` and
/// `generation_config.json`: without them transformers assumes BOS 1 and EOS 2 (ordinary tokens
/// of a herd vocabulary) and would stop generating at the wrong token.
fn write_special_ids(dir: &Path, tokenizer: &herd_tokenizer::Tokenizer) -> Result<()> {
    let bos = tokenizer.bos_id();
    let eos = tokenizer.stop_ids().to_vec();
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut config: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))?;
    config["bos_token_id"] = serde_json::json!(bos);
    config["eos_token_id"] = serde_json::json!(eos);
    let json = |v: &serde_json::Value| serde_json::to_vec_pretty(v).expect("JSON values serialize");
    write_atomic(&path, &json(&config))?;
    let generation = serde_json::json!({"bos_token_id": bos, "eos_token_id": eos});
    write_atomic(&dir.join("generation_config.json"), &json(&generation))?;
    Ok(())
}

/// Writes a folder through `write` into a temporary sibling, then renames it to `dir`
/// (replacing an older one).
fn save_dir(dir: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("checkpoint");
    let tmp = dir.with_file_name(format!(".{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    write(&tmp)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))
}

/// What a full training checkpoint holds.
pub struct Checkpoint<'a> {
    /// Model shape.
    pub config: &'a LlamaConfig,
    /// Model weights.
    pub weights: &'a Weights,
    /// Optimizer moments by name.
    pub optimizer: HashMap<String, Tensor>,
    /// The run's state.
    pub state: &'a TrainerState,
    /// Tokenizer file copied beside the model.
    pub tokenizer: &'a Path,
}

/// Writes `checkpoint` under `root` and keeps only the newest `keep_last` step folders.
pub fn save(root: &Path, checkpoint: &Checkpoint, keep_last: usize) -> Result<PathBuf> {
    let dir = step_dir(root, checkpoint.state.step);
    save_dir(&dir, |tmp| {
        write_model(
            tmp,
            checkpoint.config,
            checkpoint.weights,
            checkpoint.tokenizer,
        )?;
        let path = tmp.join("optimizer.safetensors");
        candle_core::safetensors::save(&checkpoint.optimizer, &path)?;
        let state = serde_json::to_vec_pretty(checkpoint.state).expect("json");
        write_atomic(&tmp.join("trainer.json"), &state)?;
        Ok(())
    })?;
    let steps = list_steps(root)?;
    for old in steps.iter().rev().skip(keep_last.max(1)) {
        let path = step_dir(root, *old);
        std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
    }
    Ok(dir)
}

/// Steps of the complete checkpoints under `root`, ascending.
pub fn list_steps(root: &Path) -> Result<Vec<u64>> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(Vec::new());
    };
    let mut steps: Vec<u64> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("step-")?.parse().ok()
        })
        .collect();
    steps.sort_unstable();
    Ok(steps)
}

/// A checkpoint read back.
pub struct Loaded {
    /// Model weights.
    pub weights: Weights,
    /// Optimizer moments.
    pub optimizer: HashMap<String, Tensor>,
    /// The run's state.
    pub state: TrainerState,
}

/// Reads the checkpoint folder `dir`.
pub fn load(dir: &Path, device: &Device) -> Result<Loaded> {
    let (_, weights) = hf::load(dir, device)?;
    let path = dir.join("optimizer.safetensors");
    let optimizer = candle_core::safetensors::load(&path, device)
        .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))?;
    let path = dir.join("trainer.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let state = serde_json::from_str(&text)
        .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))?;
    Ok(Loaded {
        weights,
        optimizer,
        state,
    })
}

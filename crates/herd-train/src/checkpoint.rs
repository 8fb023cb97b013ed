//! Training checkpoints: `step-00000100/` holding the model as an HF folder
//! (`config.json`, `model.safetensors`, the tokenizer; `herd generate` and transformers load it
//! as is), the optimizer moments and the trainer's state (`trainer.json`: step, tokens, data
//! cursor, counters). A checkpoint is written into a hidden temporary folder and renamed into
//! place, so a kill at any moment leaves only whole checkpoints; the oldest beyond `keep_last`
//! are removed afterwards.
//!
//! The moments are one file, `optimizer.safetensors` (`exp_avg.NAME`, `exp_avg_sq.NAME` shaped
//! as the parameter), or — when N processes share the optimizer state — one file per process,
//! `optimizer-RRRRR-of-NNNNN.safetensors`, each written by its process: there each moment is
//! the process's slice of the parameter flattened and padded with zeros to a multiple of N
//! ([`shard_range`]). When the model is cut into pipeline stages, each stage's tensors are
//! sliced among that stage's processes only, and a file holds its stage's moments; each file
//! records among how many processes its tensors are sliced (`slices`). Either resumes under any
//! sharing ([`load_optimizer`] puts slices back together).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use herd_model::checkpoint::hf;
use herd_model::{LlamaConfig, Weights};
use herd_util::fs::{write_atomic, Existing, RunDir};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::loader::Cursor;
use crate::params::Parameters;
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

/// The hidden temporary sibling `dir` is written in before it is renamed into place.
fn pending(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("checkpoint");
    dir.with_file_name(format!(".{name}.tmp"))
}

/// Makes `dir`'s temporary sibling, empty; returns it.
fn begin_dir(dir: &Path) -> Result<PathBuf> {
    let tmp = pending(dir);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    Ok(tmp)
}

/// Renames `dir`'s temporary sibling to `dir` (replacing an older one).
fn commit_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::rename(pending(dir), dir).map_err(|e| Error::io(dir, e))
}

/// Writes a folder through `write` into a temporary sibling, then renames it to `dir`.
fn save_dir(dir: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = begin_dir(dir)?;
    write(&tmp)?;
    commit_dir(dir)
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
    let step = checkpoint.state.step;
    let tmp = begin(root, step)?;
    write_model_and_state(
        &tmp,
        checkpoint.config,
        checkpoint.weights,
        checkpoint.tokenizer,
        checkpoint.state,
    )?;
    save_optimizer(&tmp, &checkpoint.optimizer)?;
    commit(root, step, keep_last)
}

/// Starts the checkpoint of `step` under `root`: its temporary folder, empty, where the
/// processes then write their parts ([`write_model_and_state`], their optimizer files) before
/// one [`commit`]s it. Returns the folder ([`pending_dir`]).
pub fn begin(root: &Path, step: u64) -> Result<PathBuf> {
    begin_dir(&step_dir(root, step))
}

/// The temporary folder of the checkpoint of `step` under `root` while it is written.
pub fn pending_dir(root: &Path, step: u64) -> PathBuf {
    pending(&step_dir(root, step))
}

/// Writes the model (an HF folder) and the trainer's state into the pending folder `tmp`.
pub fn write_model_and_state(
    tmp: &Path,
    config: &LlamaConfig,
    weights: &Weights,
    tokenizer: &Path,
    state: &TrainerState,
) -> Result<()> {
    write_model(tmp, config, weights, tokenizer)?;
    let state = serde_json::to_vec_pretty(state).expect("json");
    write_atomic(&tmp.join("trainer.json"), &state)?;
    Ok(())
}

/// Writes the whole optimizer state (`optimizer.safetensors`) into the pending folder `tmp`.
pub fn save_optimizer(tmp: &Path, optimizer: &HashMap<String, Tensor>) -> Result<()> {
    let path = tmp.join(WHOLE_OPTIMIZER);
    candle_core::safetensors::save(optimizer, &path)
        .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))
}

/// Renames the pending checkpoint of `step` into place and keeps only the newest `keep_last`
/// step folders under `root`.
pub fn commit(root: &Path, step: u64, keep_last: usize) -> Result<PathBuf> {
    let dir = step_dir(root, step);
    commit_dir(&dir)?;
    let steps = list_steps(root)?;
    for old in steps.iter().rev().skip(keep_last.max(1)) {
        let path = step_dir(root, *old);
        std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
    }
    Ok(dir)
}

/// The optimizer file of a checkpoint written by one process.
const WHOLE_OPTIMIZER: &str = "optimizer.safetensors";

/// The optimizer file of process `rank` of `ranks` that share the state.
pub fn optimizer_shard_name(rank: usize, ranks: usize) -> String {
    format!("optimizer-{rank:05}-of-{ranks:05}.safetensors")
}

/// The key of an optimizer file's count of the processes each of its tensors is sliced among.
const SLICES: &str = "slices";

/// Records in an optimizer file's tensors `file` that each moment in it is sliced among
/// `slices` processes (all the run's, or its pipeline stage's).
pub fn note_slices(file: &mut HashMap<String, Tensor>, slices: usize) -> Result<()> {
    let count = Tensor::new(&[slices as u32], &Device::Cpu)?;
    file.insert(SLICES.to_string(), count);
    Ok(())
}

/// The elements of a flattened tensor of `len` values that process `rank` of `ranks` holds:
/// `len` padded to a multiple of `ranks`, cut into equal slices; the slice's real values (the
/// rest of it, past `len`, is padding).
pub fn shard_range(len: usize, ranks: usize, rank: usize) -> std::ops::Range<usize> {
    let per_rank = len.div_ceil(ranks);
    let start = (rank * per_rank).min(len);
    start..(start + per_rank).min(len)
}

/// The per-process optimizer files of checkpoint `dir` in rank order, or None when one
/// process wrote the whole state. A missing or extra file is an error naming it.
pub fn optimizer_shards(dir: &Path) -> Result<Option<Vec<PathBuf>>> {
    if dir.join(WHOLE_OPTIMIZER).exists() {
        return Ok(None);
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut found: Vec<(usize, usize)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (rank, ranks) = name
                .strip_prefix("optimizer-")?
                .strip_suffix(".safetensors")?
                .split_once("-of-")?;
            Some((rank.parse().ok()?, ranks.parse().ok()?))
        })
        .collect();
    found.sort_unstable();
    let ranks = found.first().map(|&(_, n)| n).ok_or_else(|| {
        Error::Checkpoint(format!(
            "{} holds no optimizer state ({WHOLE_OPTIMIZER} or optimizer-*-of-*.safetensors)",
            dir.display()
        ))
    })?;
    let expected: Vec<(usize, usize)> = (0..ranks).map(|r| (r, ranks)).collect();
    if found != expected {
        return Err(Error::Checkpoint(format!(
            "{}: the optimizer files are not one per process of {ranks} ({} found)",
            dir.display(),
            found.len()
        )));
    }
    Ok(Some(
        (0..ranks)
            .map(|r| dir.join(optimizer_shard_name(r, ranks)))
            .collect(),
    ))
}

/// The whole optimizer state of checkpoint `dir` by name, shaped as `params` whole
/// ([`Parameters::shapes`]), from `optimizer.safetensors` or from every process's slices put
/// back together.
pub fn load_optimizer(dir: &Path, params: &Parameters) -> Result<HashMap<String, Tensor>> {
    let read = |path: &Path| {
        candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))
    };
    let Some(files) = optimizer_shards(dir)? else {
        return read(&dir.join(WHOLE_OPTIMIZER));
    };
    let parts = files.iter().map(|f| read(f)).collect::<Result<Vec<_>>>()?;
    // Among how many files each file's tensors are sliced (all of them, before pipelines).
    let slices = parts
        .iter()
        .zip(&files)
        .map(|(part, file)| match part.get(SLICES) {
            None => Ok(files.len()),
            Some(count) => match count.to_vec1::<u32>() {
                Ok(count) if count.len() == 1 => Ok(count[0] as usize),
                _ => Err(Error::Checkpoint(format!(
                    "{}: `{SLICES}` is not one count",
                    file.display()
                ))),
            },
        })
        .collect::<Result<Vec<_>>>()?;
    let mut state = HashMap::new();
    for (name, dims) in params.shapes() {
        for prefix in ["exp_avg", "exp_avg_sq"] {
            let key = format!("{prefix}.{name}");
            // The slices in file order, from the files of the processes that held the tensor.
            let holders: Vec<usize> = (0..parts.len())
                .filter(|&f| parts[f].contains_key(&key))
                .collect();
            let Some(&first) = holders.first() else {
                return Err(Error::Checkpoint(format!(
                    "{}: no optimizer file has {key}",
                    dir.display()
                )));
            };
            if holders.len() != slices[first] {
                return Err(Error::Checkpoint(format!(
                    "{}: {key} is in {} optimizer files, but {} says it is sliced among {}",
                    dir.display(),
                    holders.len(),
                    files[first].display(),
                    slices[first]
                )));
            }
            let slices: Vec<Tensor> = holders.iter().map(|&f| parts[f][&key].clone()).collect();
            let len: usize = dims.iter().product();
            let whole = Tensor::cat(&slices, 0)?;
            if whole.dims1()? < len {
                return Err(Error::Checkpoint(format!(
                    "{}: the slices of {key} hold {} values, the parameter {len}",
                    dir.display(),
                    whole.dims1()?
                )));
            }
            state.insert(key, whole.narrow(0, 0, len)?.reshape(dims.as_slice())?);
        }
    }
    Ok(state)
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

/// Reads the checkpoint folder `dir` written by one process.
pub fn load(dir: &Path, device: &Device) -> Result<Loaded> {
    let (weights, state) = load_model_and_state(dir, device)?;
    let path = dir.join(WHOLE_OPTIMIZER);
    let optimizer = candle_core::safetensors::load(&path, device)
        .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))?;
    Ok(Loaded {
        weights,
        optimizer,
        state,
    })
}

/// Reads the weights and the trainer's state of checkpoint `dir` (its optimizer state is read
/// by whatever shares it: [`load_optimizer`]).
pub fn load_model_and_state(dir: &Path, device: &Device) -> Result<(Weights, TrainerState)> {
    let (_, weights) = hf::load(dir, device)?;
    let path = dir.join("trainer.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let state = serde_json::from_str(&text)
        .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))?;
    Ok((weights, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_a_tensor_once_padded_to_the_process_count() {
        // 10 values over 4 processes: slices of 3, the last one 1 value and 2 of padding.
        let ranges: Vec<_> = (0..4).map(|r| shard_range(10, 4, r)).collect();
        assert_eq!(ranges, [0..3, 3..6, 6..9, 9..10]);
        // Fewer values than processes: the last processes hold only padding.
        assert_eq!(shard_range(2, 4, 3), 2..2);
        assert_eq!(shard_range(8, 1, 0), 0..8);
    }

    #[test]
    fn a_missing_optimizer_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = candle_core::Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
        let slices = HashMap::from([("exp_avg.w".to_string(), empty)]);
        for rank in [0, 2] {
            let path = dir.path().join(optimizer_shard_name(rank, 3));
            candle_core::safetensors::save(&slices, &path).unwrap();
        }
        let err = optimizer_shards(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("one per process of 3") && err.contains("2 found"),
            "{err}"
        );
        let path = dir.path().join(optimizer_shard_name(1, 3));
        candle_core::safetensors::save(&slices, &path).unwrap();
        let files = optimizer_shards(dir.path()).unwrap().unwrap();
        assert_eq!(files.len(), 3);
        assert!(files[1].ends_with("optimizer-00001-of-00003.safetensors"));
        let empty_dir = tempfile::tempdir().unwrap();
        let err = optimizer_shards(empty_dir.path()).unwrap_err().to_string();
        assert!(err.contains("no optimizer state"), "{err}");
    }
}

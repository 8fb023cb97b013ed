//! The post-training stages as whole jobs — `herd sft`, `herd rm train`, `herd rs`, `herd dpo`
//! and the rounds of `herd posttrain` call these: read the model folder and the data, split
//! off the held-out prompts, build the stage's objective and [`fit`] it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use herd_infer::engine::{Engine, EngineConfig};
use herd_tokenizer::chat::{Message, ToolPromptFormat};
use herd_tokenizer::Tokenizer;
use herd_train::params::Parameters;
use herd_train::{RunOptions, RunSummary};
use indicatif::ProgressBar;

use herd_util::fs::list_files;
use herd_util::records::is_json_data;

use crate::conversation::{Format, Preference};
use crate::dataset::{is_held_out, prompt_of, token_dialogs, token_pairs, Examples, TokenPair};
use crate::dpo::DpoConfig;
use crate::dpo_training::{cached_reference, DpoTraining, PairSet};
use crate::error::{Error, Result};
use crate::fit::{fit, Objective, TrainConfig};
use crate::rejection::{rejection_sample, write_jsonl, RejectionConfig, RejectionStats};
use crate::reward::{add_head, RewardModel, RewardTraining};
use crate::sft::Sft;

const FORMAT: ToolPromptFormat = ToolPromptFormat::Json;

/// A model folder opened for training: its parameters (f32) and its tokenizer.
pub struct Start {
    /// Trainable parameters holding the folder's weights.
    pub params: Parameters,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// The tokenizer's file, copied into every checkpoint.
    pub tokenizer_file: PathBuf,
}

/// Opens a model for training: an HF folder (as `herd pretrain` writes it, with its
/// `tokenizer.model` or `tokenizer.json`), a Meta folder, or a GGUF file (quantized weights
/// are dequantized to f32; its embedded tokenizer is written as HF files under
/// `scratch/tokenizer/` so that checkpoints carry it).
pub fn open_model(path: &Path, scratch: &Path) -> Result<Start> {
    let checkpoint = herd_model::checkpoint::load(path, &Device::Cpu)?;
    let (config, weights) = (checkpoint.config, checkpoint.weights);
    let beside = ["tokenizer.model", "tokenizer.json"]
        .iter()
        .map(|f| path.join(f))
        .find(|p| p.is_file());
    let tokenizer_file = match beside {
        Some(file) => file,
        None => {
            let tokenizer = herd_infer::loader::load_tokenizer(path)
                .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
            tokenizer.save_hf(&scratch.join("tokenizer"))?
        }
    };
    let mut params = Parameters::from_weights(&config, &weights, DType::F32, &Device::Cpu)?;
    if let Ok(score) = weights.get(crate::reward::SCORE_WEIGHT, &[1, config.dim]) {
        params.append(crate::reward::SCORE_WEIGHT, &score.to_dense(DType::F32)?)?;
    }
    Ok(Start {
        params,
        tokenizer: Tokenizer::from_path(&tokenizer_file)?,
        tokenizer_file,
    })
}

/// Checks `config` and claims `options.out` for a `command` run of `model` on `data` (see
/// [`herd_train::checkpoint::open_run`]): its fingerprint is the model's files, the data and
/// held-out files, `config` and the stage's `extra` settings, so `--resume` continues only the
/// run they made.
fn claim(
    command: &str,
    model: &Path,
    (data, held_out): (&[PathBuf], &HeldOut),
    config: &TrainConfig,
    extra: serde_json::Value,
    options: &RunOptions,
) -> Result<()> {
    config.validate().map_err(Error::Invalid)?;
    let files = |paths: &[PathBuf]| -> Result<String> {
        let files = list_files(paths, &is_json_data)?;
        Ok(herd_util::fingerprint::of_files(&files)?)
    };
    let held = match held_out {
        HeldOut::Fraction(f) => serde_json::json!(f),
        HeldOut::Files(paths) => serde_json::json!(files(paths)?),
    };
    let fingerprint = serde_json::json!({
        "model": herd_util::fingerprint::of_path(model)?,
        "data": files(data)?,
        "held_out": held,
        "settings": {"train": config, "extra": extra},
    });
    Ok(herd_train::checkpoint::open_run(
        options,
        command,
        &fingerprint,
    )?)
}

/// Examples of `files`, reported on stderr when `loud`.
pub fn read_examples(files: &[PathBuf], loud: bool) -> Result<Examples> {
    let examples = Examples::read(files, Format::Auto)?;
    if loud {
        eprintln!("read {}", examples.report());
    }
    Ok(examples)
}

/// Where the held-out examples come from.
#[derive(Debug, Clone, PartialEq)]
pub enum HeldOut {
    /// This share of the data's prompts, chosen by a hash of the prompt.
    Fraction(f64),
    /// These files (all of the data is then trained on).
    Files(Vec<PathBuf>),
}

impl HeldOut {
    /// (training, held-out) examples of `data`.
    fn split<T>(
        &self,
        data: &[PathBuf],
        loud: bool,
        items: impl Fn(Examples) -> Vec<T>,
        prompt: impl Fn(&T) -> &[Message],
    ) -> Result<(Vec<T>, Vec<T>)> {
        let all = items(read_examples(data, loud)?);
        Ok(match self {
            HeldOut::Fraction(f) => split_by_prompt(all, prompt, *f),
            HeldOut::Files(files) => (all, items(read_examples(files, loud)?)),
        })
    }
}

/// `items` split into (training, held-out) by their prompt.
pub fn split_by_prompt<T>(
    items: Vec<T>,
    prompt: impl Fn(&T) -> &[Message],
    fraction: f64,
) -> (Vec<T>, Vec<T>) {
    items
        .into_iter()
        .partition(|item| !is_held_out(prompt(item), fraction))
}

/// Conversations for SFT: the dialogs, and each preference's prompt with its chosen reply.
fn sft_dialogs(examples: Examples) -> Vec<Vec<Message>> {
    let mut dialogs = examples.dialogs;
    for p in examples.preferences {
        let mut d = p.prompt;
        d.push(p.chosen);
        dialogs.push(d);
    }
    dialogs
}

/// What a training stage read and did.
#[derive(Debug)]
pub struct StageReport {
    /// Training examples (conversations or pairs).
    pub train: usize,
    /// Held-out examples.
    pub held_out: usize,
    /// The run.
    pub run: RunSummary,
}

/// Fits `objective` from `start` and reports the run with its (training, held-out) sizes.
fn train_stage(
    objective: &mut dyn Objective,
    start: &Start,
    config: &TrainConfig,
    options: &RunOptions,
    (train, held_out): (usize, usize),
) -> Result<StageReport> {
    let run = fit(
        objective,
        &start.params,
        config,
        options,
        &start.tokenizer_file,
    )?;
    Ok(StageReport {
        train,
        held_out,
        run,
    })
}

fn say(loud: bool, text: String) {
    if loud {
        eprintln!("{text}");
    }
}

/// SFT of the model in `model` on the conversations of `data`.
pub fn sft(
    model: &Path,
    data: &[PathBuf],
    config: &TrainConfig,
    held_out: &HeldOut,
    options: &RunOptions,
) -> Result<StageReport> {
    claim(
        "sft",
        model,
        (data, held_out),
        config,
        serde_json::Value::Null,
        options,
    )?;
    let start = open_model(model, &options.out)?;
    let (train, held) = held_out.split(data, options.progress, sft_dialogs, |d| prompt_of(d))?;
    let (train, held) = (
        token_dialogs(&start.tokenizer, &train, FORMAT)?,
        token_dialogs(&start.tokenizer, &held, FORMAT)?,
    );
    let mut objective = Sft::new(train, held, config.seq_len, config.micro_batch);
    let (n_train, n_held) = (objective.examples(), objective.held_out_len());
    say(
        options.progress,
        format!(
            "SFT: {n_train} conversations, {n_held} held out, {} longer than {} tokens (cut)",
            objective.truncated, config.seq_len
        ),
    );
    train_stage(&mut objective, &start, config, options, (n_train, n_held))
}

/// Preference pairs of `data`, in tokens, split into (training, held-out) by prompt.
/// Pairs longer than a row are left out (reported): cutting them would cut off the part
/// where chosen and rejected differ.
fn pair_sets(
    tokenizer: &Tokenizer,
    data: &[PathBuf],
    held_out: &HeldOut,
    seq_len: usize,
    loud: bool,
) -> Result<(Vec<TokenPair>, Vec<TokenPair>)> {
    let (train, held): (Vec<Preference>, Vec<Preference>) =
        held_out.split(data, loud, |e| e.preferences, |p| &p.prompt)?;
    if train.is_empty() {
        return Err(Error::Invalid(format!(
            "no preference records to train on in {}",
            data.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut sets = [
        token_pairs(tokenizer, &train, FORMAT)?,
        token_pairs(tokenizer, &held, FORMAT)?,
    ];
    for (set, name) in sets.iter_mut().zip(["training", "held-out"]) {
        let before = set.len();
        set.retain(|p| p.prompt.len() + p.chosen.ids.len().max(p.rejected.ids.len()) <= seq_len);
        if before > set.len() {
            say(
                loud,
                format!(
                    "{} of {before} {name} pairs are longer than {seq_len} tokens: left out",
                    before - set.len()
                ),
            );
        }
    }
    let [train, held] = sets;
    Ok((train, held))
}

/// Reward-model training from the model in `model` on the preference pairs of `data`.
pub fn reward_model(
    model: &Path,
    data: &[PathBuf],
    config: &TrainConfig,
    held_out: &HeldOut,
    options: &RunOptions,
) -> Result<StageReport> {
    claim(
        "rm train",
        model,
        (data, held_out),
        config,
        serde_json::Value::Null,
        options,
    )?;
    let mut start = open_model(model, &options.out)?;
    add_head(&mut start.params, config.seed)?;
    let (train, held) = pair_sets(
        &start.tokenizer,
        data,
        held_out,
        config.seq_len,
        options.progress,
    )?;
    let (n_train, n_held) = (train.len(), held.len());
    say(
        options.progress,
        format!("reward model: {n_train} pairs, {n_held} held out"),
    );
    let mut objective = RewardTraining::new(train, held, config.seq_len, config.micro_batch);
    train_stage(&mut objective, &start, config, options, (n_train, n_held))
}

/// DPO of the model in `model` (also the frozen reference) on the pairs of `data`.
pub fn dpo(
    model: &Path,
    data: &[PathBuf],
    config: &TrainConfig,
    dpo: DpoConfig,
    held_out: &HeldOut,
    options: &RunOptions,
) -> Result<StageReport> {
    dpo.validate().map_err(Error::Invalid)?;
    claim(
        "dpo",
        model,
        (data, held_out),
        config,
        serde_json::json!(dpo),
        options,
    )?;
    let start = open_model(model, &options.out)?;
    let (train, held) = pair_sets(
        &start.tokenizer,
        data,
        held_out,
        config.seq_len,
        options.progress,
    )?;
    let (n_train, n_held) = (train.len(), held.len());
    say(
        options.progress,
        format!("DPO: {n_train} pairs, {n_held} held out; reference log-probabilities…"),
    );
    let reference = start.params.frozen_model()?;
    let per_pass = config.micro_batch;
    let train_ref = cached_reference(&options.out, &reference, &train, config.seq_len, per_pass)?;
    let held_ref = cached_reference(&options.out, &reference, &held, config.seq_len, per_pass)?;
    drop(reference);
    let mut objective = DpoTraining::new(
        PairSet {
            pairs: train,
            reference: train_ref,
        },
        PairSet {
            pairs: held,
            reference: held_ref,
        },
        dpo,
        config.seq_len,
        config.micro_batch,
    );
    train_stage(&mut objective, &start, config, options, (n_train, n_held))
}

/// The prompts of every conversation and preference in `data` (each once, in file order).
pub fn prompts_of(data: &[PathBuf], loud: bool) -> Result<Vec<Vec<Message>>> {
    let examples = read_examples(data, loud)?;
    let mut prompts: Vec<Vec<Message>> = examples
        .dialogs
        .iter()
        .map(|d| prompt_of(d).to_vec())
        .chain(examples.preferences.into_iter().map(|p| p.prompt))
        .collect();
    let mut seen = std::collections::HashSet::new();
    prompts.retain(|p| seen.insert(format!("{p:?}")));
    Ok(prompts)
}

/// Rejection sampling: `prompts` answered K times by `policy`, the best by `reward` kept and
/// written to `out` as JSONL.
pub fn rejection_sampling(
    policy: &Path,
    reward: &Path,
    prompts: &[Vec<Message>],
    config: &RejectionConfig,
    out: &Path,
    progress: bool,
) -> Result<RejectionStats> {
    let policy = herd_infer::load(
        policy,
        None,
        DType::F32,
        herd_infer::Quantized::Keep,
        &Device::Cpu,
    )
    .map_err(|e| Error::Invalid(format!("{}: {e}", policy.display())))?;
    let reward_model = RewardModel::load(reward, &Device::Cpu)?;
    let bar = if progress {
        herd_train::trainer::progress_bar(true, 0, prompts.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    // The K samples of a prompt decode together; the context is the policy's own.
    let engine = Engine::start(
        Arc::new(policy.model),
        EngineConfig {
            max_running: config.samples.max(1),
            context: usize::MAX,
            max_waiting: config.samples.max(1),
            prefill_tokens_per_step: herd_infer::generate::PREFILL_CHUNK,
        },
    );
    let (best, stats) = rejection_sample(
        &engine,
        &reward_model,
        &policy.tokenizer,
        prompts,
        config,
        || bar.inc(1),
    )?;
    bar.finish_and_clear();
    write_jsonl(out, &best)?;
    Ok(stats)
}

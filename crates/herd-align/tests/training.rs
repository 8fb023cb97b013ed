//! Post-training end to end on a toy preference — answers that explain beat one-word answers —
//! with a vocabulary trained on the toy data and a small random Llama: the reward model learns
//! it on held-out prompts, DPO widens the held-out margin from exactly 0, SFT resumes exactly,
//! rejection sampling keeps the reward model's best, and the rounds of a recipe run and resume.

use std::path::{Path, PathBuf};

use herd_align::dpo::DpoConfig;
use herd_align::fit::TrainConfig;
use herd_align::rounds::{posttrain, sft_defaults, PosttrainRecipe};
use herd_align::stages::{self, HeldOut};
use herd_model::LlamaConfig;
use herd_tokenizer::train::{ranks_file_text, train_ranks};
use herd_train::metrics::{read, StepMetrics};
use herd_train::params::Parameters;
use herd_train::RunOptions;
use serde_json::json;

const SUBJECTS: [&str; 8] = [
    "rivers", "stars", "bread", "bridges", "winter", "music", "salt", "clocks",
];
const ASPECTS: [&str; 6] = ["form", "change", "matter", "begin", "end", "work"];

/// A toy preference file: 48 prompts, each with an explaining (chosen) and a curt (rejected)
/// reply.
fn preferences() -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for (i, subject) in SUBJECTS.iter().enumerate() {
        for (j, aspect) in ASPECTS.iter().enumerate() {
            let prompt = format!("Why do {subject} {aspect}?");
            let chosen = format!(
                "Because {subject} {aspect} when the conditions around them allow it, and the \
                 reasons are easy to follow once you look at {} closely.",
                SUBJECTS[(i + j + 1) % SUBJECTS.len()]
            );
            let rejected = ["No.", "Dunno.", "Whatever.", "Ask later."][(i + j) % 4].to_string();
            out.push(json!({"prompt": prompt, "chosen": chosen, "rejected": rejected}));
        }
    }
    out
}

struct Toy {
    _dir: tempfile::TempDir,
    root: PathBuf,
    base: PathBuf,
    pairs: PathBuf,
}

fn write_jsonl(path: &Path, records: &[serde_json::Value]) {
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// The data, a tokenizer trained on it, and a random base model saved as an HF folder.
fn toy() -> Toy {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let records = preferences();
    let pairs = root.join("pairs.jsonl");
    write_jsonl(&pairs, &records);
    let texts: Vec<String> = records.iter().map(|r| r.to_string()).collect();
    let ranks = train_ranks(texts.iter(), 600, 1).unwrap();
    let tokenizer = root.join("tokenizer.model");
    std::fs::write(&tokenizer, ranks_file_text(&ranks)).unwrap();
    let config = LlamaConfig {
        vocab_size: ranks.len() + 256,
        dim: 48,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 12,
        ffn_dim: 96,
        max_seq_len: 128,
        tie_embeddings: false,
        ..LlamaConfig::preset("llama3.2-1b").unwrap()
    };
    let params = Parameters::init(
        &config,
        7,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let base = root.join("base");
    herd_train::checkpoint::save_model(&base, &config, &params.weights(), &tokenizer).unwrap();
    Toy {
        _dir: dir,
        root,
        base,
        pairs,
    }
}

fn config(steps: u64, lr: f64) -> TrainConfig {
    TrainConfig {
        steps,
        batch: 8,
        micro_batch: 4,
        seq_len: 128,
        lr,
        min_lr: lr / 10.0,
        warmup_steps: 2,
        weight_decay: 0.0,
        eval_every: steps,
        checkpoint_every: steps,
        ..sft_defaults()
    }
}

fn options(out: PathBuf) -> RunOptions {
    RunOptions {
        out,
        max_steps: None,
        resume: false,
        overwrite: false,
        progress: false,
    }
}

fn extra(m: &StepMetrics, key: &str) -> f64 {
    m.extra[key].unwrap()
}

#[test]
fn reward_model_learns_the_preference_on_held_out_prompts() {
    let toy = toy();
    let out = toy.root.join("rm");
    let report = stages::reward_model(
        &toy.base,
        std::slice::from_ref(&toy.pairs),
        &config(40, 3e-3),
        &HeldOut::Fraction(0.25),
        &options(out.clone()),
    )
    .unwrap();
    assert!(report.held_out >= 6, "{report:?}");
    let metrics = read(&out.join("metrics.jsonl")).unwrap();
    let (before, after) = (&metrics[0], metrics.last().unwrap());
    eprintln!(
        "held-out accuracy {} → {}",
        extra(before, "val_accuracy"),
        extra(after, "val_accuracy")
    );
    assert!(extra(after, "val_accuracy") >= 0.9, "{after:?}");
    assert!(after.val_loss.unwrap() < 0.3, "{after:?}");
}

#[test]
fn dpo_widens_the_held_out_margin() {
    let toy = toy();
    let out = toy.root.join("dpo");
    stages::dpo(
        &toy.base,
        std::slice::from_ref(&toy.pairs),
        &config(16, 2e-3),
        DpoConfig::default(),
        &HeldOut::Fraction(0.25),
        &options(out.clone()),
    )
    .unwrap();
    let metrics = read(&out.join("metrics.jsonl")).unwrap();
    let (before, after) = (&metrics[0], metrics.last().unwrap());
    // The policy starts as the reference: every implicit reward is exactly 0.
    assert_eq!(extra(before, "val_margin"), 0.0);
    eprintln!(
        "held-out margin {} → {}, reward accuracy {}",
        extra(before, "val_margin"),
        extra(after, "val_margin"),
        extra(after, "val_reward_accuracy")
    );
    assert!(extra(after, "val_margin") > 0.5, "{after:?}");
    assert!(extra(after, "val_reward_accuracy") >= 0.9, "{after:?}");
}

#[test]
fn sft_resumes_exactly() {
    let toy = toy();
    let data = [toy.pairs.clone()];
    let held_out = HeldOut::Fraction(0.25);
    let straight = toy.root.join("straight");
    let cfg = TrainConfig {
        checkpoint_every: 3,
        eval_every: 3,
        ..config(6, 1e-3)
    };
    stages::sft(
        &toy.base,
        &data,
        &cfg,
        &held_out,
        &options(straight.clone()),
    )
    .unwrap();
    let split = toy.root.join("split");
    let first = RunOptions {
        max_steps: Some(3),
        ..options(split.clone())
    };
    stages::sft(&toy.base, &data, &cfg, &held_out, &first).unwrap();
    let again = RunOptions {
        resume: true,
        ..options(split.clone())
    };
    stages::sft(&toy.base, &data, &cfg, &held_out, &again).unwrap();
    let bytes = |dir: &Path| std::fs::read(dir.join("final/model.safetensors")).unwrap();
    assert_eq!(bytes(&straight), bytes(&split));
    let losses = |dir: &Path| -> Vec<(u64, u64)> {
        read(&dir.join("metrics.jsonl"))
            .unwrap()
            .iter()
            .map(|m| (m.step, m.loss.to_bits()))
            .collect()
    };
    assert_eq!(losses(&straight), losses(&split));
    // Resuming another stage's folder, or the same stage with other data, is refused (SFT
    // once continued a DPO run's folder silently).
    let err = stages::dpo(
        &toy.base,
        &data,
        &cfg,
        Default::default(),
        &held_out,
        &again,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("command") && err.contains("--overwrite"),
        "{err}"
    );
    let other = toy.root.join("other.jsonl");
    write_jsonl(&other, &preferences()[..10]);
    let err = stages::sft(&toy.base, &[other], &cfg, &held_out, &again)
        .unwrap_err()
        .to_string();
    assert!(err.contains("data") && !err.contains("settings"), "{err}");
    let bad = TrainConfig {
        lr: f64::NAN,
        ..cfg.clone()
    };
    let fresh = options(toy.root.join("nan"));
    let err = stages::sft(&toy.base, &data, &bad, &held_out, &fresh)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`lr`"), "{err}");
}

#[test]
fn rounds_sample_the_best_and_resume() {
    let toy = toy();
    let recipe_path = toy.root.join("posttrain.toml");
    let section = |steps: u64| {
        format!(
            "steps = {steps}\nbatch = 8\nmicro_batch = 4\nseq_len = 128\nlr = 2e-3\nwarmup_steps = 1\n\
             eval_every = {steps}\ncheckpoint_every = {steps}\n"
        )
    };
    let recipe = format!(
        "name = \"toy\"\nbase = {:?}\nrounds = 2\nheld_out_fraction = 0.25\n\n\
         [data]\npreferences = [{:?}]\nprompts_per_round = 4\n\n\
         [reward]\n{}\n[rejection]\nsamples = 3\nmax_tokens = 12\nscore_seq_len = 128\n\n\
         [sft]\n{}\n[dpo]\nbeta = 0.1\n{}",
        toy.base,
        toy.pairs,
        section(20),
        section(4),
        section(4)
    );
    std::fs::write(&recipe_path, recipe).unwrap();
    let recipe = PosttrainRecipe::load(&recipe_path).unwrap();
    let out = toy.root.join("run");
    let summary = posttrain(&recipe, &out, false, false, false).unwrap();
    assert_eq!(summary.final_model, out.join("round-2/dpo/final"));
    assert_eq!(summary.rejection.len(), 2);
    // Each kept sample is the best of its prompt's three, and the file reads back as SFT data.
    let text = std::fs::read_to_string(out.join("round-1/rejection.jsonl")).unwrap();
    for line in text.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let rewards: Vec<f64> = serde_json::from_value(record["rewards"].clone()).unwrap();
        let best = rewards.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(rewards.len(), 3);
        assert_eq!(record["reward"].as_f64().unwrap(), best);
    }
    let read = stages::read_examples(&[out.join("round-1/rejection.jsonl")], false).unwrap();
    assert_eq!((read.dialogs.len(), read.rejected.len()), (4, 0));
    // Without --resume the run is refused; with it, finished stages are kept as they are.
    assert!(posttrain(&recipe, &out, false, false, false).is_err());
    let final_bytes = std::fs::read(out.join("round-2/dpo/final/model.safetensors")).unwrap();
    let again = posttrain(&recipe, &out, true, false, false).unwrap();
    assert!(again.rejection.is_empty(), "nothing sampled again");
    assert_eq!(
        std::fs::read(out.join("round-2/dpo/final/model.safetensors")).unwrap(),
        final_bytes
    );
}

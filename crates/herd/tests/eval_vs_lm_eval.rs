//! `herd eval` against lm-evaluation-harness itself, through the binary: the same task files
//! (tasks/) and documents, on SmolLM2-135M-Instruct Q4_1 (transformers dequantizes the GGUF;
//! herd runs with `--dequantize`) and on a model herd pretrains here (an HF folder whose
//! tokenizer.json the harness reads). The fixtures are made by
//! tools/reference/lm_eval_fixture.py: lm_eval 0.4.13's `hf` backend (transformers 4.57.6,
//! torch 2.9.1, CPU) in float64, the exact log-likelihoods of the weights; herd runs in float32.
//!
//! Held to: the same prompt and continuation strings for every request (few-shot draws
//! included), every log-likelihood within 1e-4 per model request (per window for rolling ones),
//! the same greedy flags and generations, the same per-document acc / acc_norm / exact_match
//! for every filter, and the same aggregated results.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::{herd, pretrain_on_alice};

/// Largest difference allowed between a log-likelihood of herd and of the harness, per request
/// the model answers (a continuation, or one window of a rolling log-likelihood).
const LOGPROB_TOLERANCE: f64 = 1e-4;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Runs `herd eval` for every task of `fixture` on `model` and compares.
fn compare(model: &Path, extra: &[&str], fixture: &Value, data: &Path) {
    let out = tempfile::tempdir().unwrap();
    let tokenizer = herd_infer::loader::load_tokenizer(model).unwrap();
    for (task, want) in fixture["tasks"].as_object().unwrap() {
        let results = out.path().join(format!("{task}.json"));
        let shots = want["num_fewshot"].to_string();
        let limit = want["limit"].to_string();
        let max_length = want["max_length"].as_u64();
        let mut args = vec![
            "eval".to_string(),
            "-m".into(),
            model.display().to_string(),
            "--tasks".into(),
            task.clone(),
            "--data-dir".into(),
            data.display().to_string(),
            "--num-fewshot".into(),
            shots,
            "--limit".into(),
            limit,
            "--output".into(),
            results.display().to_string(),
            "--log-samples".into(),
            "--quiet".into(),
        ];
        if let Some(m) = max_length {
            args.extend(["--max-length".into(), m.to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        herd(&args.iter().map(String::as_str).collect::<Vec<_>>());

        let samples =
            std::fs::read_to_string(out.path().join(format!("samples_{task}.jsonl"))).unwrap();
        let mut lines: HashMap<(u64, String), Value> = HashMap::new();
        for line in samples.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let key = (
                v["doc_id"].as_u64().unwrap(),
                v["filter"].as_str().unwrap().to_string(),
            );
            lines.insert(key, v);
        }
        let (mut worst, mut compared) = (0f64, 0);
        for doc in want["docs"].as_array().unwrap() {
            let id = doc["doc_id"].as_u64().unwrap();
            for (filter, want_filtered) in doc["filters"].as_object().unwrap() {
                let line = lines
                    .get(&(id, filter.clone()))
                    .unwrap_or_else(|| panic!("{task} doc {id}: no {filter} sample"));
                // The requests, as strings.
                let got_requests: Vec<&Value> = (0..)
                    .map_while(|i| line["arguments"].get(format!("gen_args_{i}")))
                    .collect();
                let want_requests = doc["requests"].as_array().unwrap();
                assert_eq!(got_requests.len(), want_requests.len(), "{task} doc {id}");
                for (g, w) in got_requests.iter().zip(want_requests) {
                    assert_eq!(g["arg_0"], w[0], "{task} doc {id}: the prompt differs");
                    if let Some(cont) = w[1].as_str() {
                        assert_eq!(
                            g["arg_1"], cont,
                            "{task} doc {id}: the continuation differs"
                        );
                    }
                }
                // The raw answers.
                for (i, (g, w)) in line["resps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .zip(doc["resps"].as_array().unwrap())
                    .enumerate()
                {
                    let g = &g[0];
                    match w {
                        Value::Array(w) => {
                            let d = (g[0].as_f64().unwrap() - w[0].as_f64().unwrap()).abs();
                            worst = worst.max(d);
                            compared += 1;
                            assert_eq!(g[1], w[1], "{task} doc {id} request {i}: greedy flag");
                        }
                        Value::Number(w) => {
                            let text = got_requests[i]["arg_0"].as_str().unwrap();
                            let tokens = tokenizer.encode_prompt(text, true).unwrap();
                            let length = max_length.unwrap_or(u64::MAX) as usize;
                            let windows =
                                herd_eval::model::rolling_windows(&tokens, 0, length).len();
                            let d = (g.as_f64().unwrap() - w.as_f64().unwrap()).abs();
                            worst = worst.max(d / windows as f64);
                            compared += 1;
                        }
                        w => assert_eq!(g, w, "{task} doc {id}: the generation differs"),
                    }
                }
                // What the filters kept, and the scores.
                if let Some(Value::String(w)) = want_filtered["filtered_resps"].get(0) {
                    assert_eq!(line["filtered_resps"][0], *w, "{task} doc {id}: {filter}");
                }
                for (metric, w) in want_filtered["metrics"].as_object().unwrap() {
                    if ["acc", "acc_norm", "exact_match"].contains(&metric.as_str()) {
                        assert_eq!(
                            line[metric].as_f64(),
                            w.as_f64(),
                            "{task} doc {id}: {metric},{filter}"
                        );
                    }
                }
            }
        }
        eprintln!("{task}: {compared} log-likelihoods, largest difference {worst:.2e}");
        assert!(
            worst <= LOGPROB_TOLERANCE,
            "{task}: a log-likelihood differs from the harness's by {worst:.2e}"
        );
        // The aggregates.
        let got: Value = serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap();
        let got = &got["results"][task];
        for (key, w) in want["results"].as_object().unwrap() {
            let g = &got[key];
            match (g, w) {
                (Value::Number(g), Value::Number(w)) => {
                    let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
                    let tolerance = if key.contains("_stderr") { 1e-4 } else { 1e-5 };
                    assert!(
                        (g - w).abs() <= tolerance * w.abs().max(1e-3),
                        "{task}: {key} {g} vs the harness's {w}"
                    );
                }
                (Value::Null, _) if key == "name" || key == "sample_len" => {}
                (g, w) => assert_eq!(g, w, "{task}: {key}"),
            }
        }
    }
}

#[test]
fn smollm2_gives_the_harness_numbers() {
    let Some(model) = herd_util::testing::asset("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let Some(data) = herd_util::testing::shared("data/eval") else {
        return;
    };
    compare(
        &model,
        &["--dequantize"],
        &fixture("lm_eval_smollm2.json"),
        &data,
    );
}

/// The model of `pretrain_on_alice` (40 steps, a context of 1,024). Set HERD_KEEP_EVAL_MODEL
/// to a folder to keep it there (tools/reference/lm_eval_fixture.py runs the harness on it).
#[test]
fn a_model_herd_pretrained_gives_the_harness_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(data) = herd_util::testing::shared("data/eval") else {
        return;
    };
    let Some(model) = pretrain_on_alice(dir.path(), 40, 1024) else {
        return;
    };
    if let Ok(keep) = std::env::var("HERD_KEEP_EVAL_MODEL") {
        let keep = PathBuf::from(keep);
        std::fs::create_dir_all(&keep).unwrap();
        for entry in std::fs::read_dir(&model).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), keep.join(entry.file_name())).unwrap();
        }
    }
    compare(&model, &[], &fixture("lm_eval_pretrained.json"), &data);
}

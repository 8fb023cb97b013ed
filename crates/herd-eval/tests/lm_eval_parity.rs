//! `herd eval` against lm-evaluation-harness itself: the same task files (tasks/) on the same
//! model, SmolLM2-135M-Instruct Q4_1 — the harness's `hf` backend loads the GGUF through
//! transformers, which dequantizes it to float32, and herd runs the same dequantized weights.
//! The fixture is made by tools/reference/lm_eval_fixture.py (lm_eval 0.4.13, transformers
//! 4.57.6, torch 2.9.1, CPU).
//!
//! The harness runs in float64 (the exact log-likelihoods of the weights), herd in float32.
//! Held to: the same prompt and continuation strings for every request (few-shot draws
//! included), every log-likelihood within 1e-4 per model request (per window for rolling ones), the same greedy flags and generations, the same
//! per-document acc / acc_norm / exact_match, and the same aggregated results.

use std::path::PathBuf;

use candle_core::{DType, Device};
use herd_eval::evaluate::Sample;
use herd_eval::task::Request;
use herd_eval::{builtin, EvalModel, EvalOptions, Task};
use serde_json::Value;

/// Largest difference allowed between a log-likelihood of herd and of the harness, per request
/// the model answers (a continuation, or one window of a rolling log-likelihood).
const LOGPROB_TOLERANCE: f64 = 1e-4;

fn fixture() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lm_eval_smollm2.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A request as the harness logs its arguments.
fn harness_args(request: &Request) -> Value {
    match request {
        Request::Loglikelihood {
            context,
            continuation,
        } => serde_json::json!([context, continuation]),
        Request::Rolling(text) => serde_json::json!([text]),
        Request::Generate { context, .. } => serde_json::json!([context]),
    }
}

/// Checks one document; returns the largest log-likelihood difference per model request (a
/// rolling log-likelihood is the sum of `windows` requests, one per window) and the count of
/// log-likelihoods compared.
fn check_sample(task: &str, sample: &Sample, want: &Value, windows: usize) -> (f64, usize) {
    let mut worst = 0f64;
    let mut compared = 0;
    let id = sample.doc_id;
    let want_requests = want["requests"].as_array().unwrap();
    assert_eq!(
        sample.requests.len(),
        want_requests.len(),
        "{task} doc {id}: request count"
    );
    for (r, w) in sample.requests.iter().zip(want_requests) {
        let got = harness_args(r);
        let w = match r {
            Request::Generate { .. } => serde_json::json!([w[0]]),
            _ => w.clone(),
        };
        assert_eq!(
            got, w,
            "{task} doc {id}: the request differs from the harness's"
        );
    }
    for (got, want) in sample
        .responses
        .iter()
        .zip(want["resps"].as_array().unwrap())
    {
        match (got, want) {
            (Value::Array(g), Value::Array(w)) => {
                let (g0, w0) = (g[0].as_f64().unwrap(), w[0].as_f64().unwrap());
                worst = worst.max((g0 - w0).abs());
                compared += 1;
                assert_eq!(g[1], w[1], "{task} doc {id}: greedy flag ({g0} vs {w0})");
            }
            (Value::Number(g), Value::Number(w)) => {
                let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
                worst = worst.max((g - w).abs() / windows as f64);
                compared += 1;
            }
            (Value::String(g), Value::String(w)) => {
                assert_eq!(g, w, "{task} doc {id}: the generation differs")
            }
            (g, w) => panic!("{task} doc {id}: answer {g} vs the harness's {w}"),
        }
    }
    for (filter, want_filtered) in want["filters"].as_object().unwrap() {
        if let Some(Value::String(w)) = want_filtered["filtered_resps"].get(0) {
            let got = sample
                .filtered
                .iter()
                .find(|(f, _)| f == filter)
                .map(|(_, v)| v);
            assert_eq!(
                got,
                Some(&Value::String(w.clone())),
                "{task} doc {id}: {filter} answer"
            );
        }
        for (name, want_value) in want_filtered["metrics"].as_object().unwrap() {
            if !["acc", "acc_norm", "exact_match"].contains(&name.as_str()) {
                continue;
            }
            let got = sample
                .scores
                .iter()
                .find(|s| &s.0 == filter && s.1.name() == name)
                .map(|s| s.2);
            assert_eq!(got, want_value.as_f64(), "{task} doc {id}: {name},{filter}");
        }
    }
    (worst, compared)
}

#[test]
fn herd_eval_gives_the_harness_numbers_on_smollm2() {
    let Some(model_path) = herd_util::testing::asset("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    else {
        return;
    };
    let Some(data_dir) = herd_util::testing::shared("data/eval") else {
        return;
    };
    let loaded = herd_infer::load(
        &model_path,
        None,
        DType::F32,
        herd_infer::Quantized::Dequantize,
        &Device::Cpu,
    )
    .unwrap();
    let fixture = fixture();
    for (name, want) in fixture["tasks"].as_object().unwrap() {
        let config = builtin::task_config(name).unwrap();
        let shots = want["num_fewshot"].as_u64().map(|n| n as usize);
        let mut task = Task::load(config, &data_dir, shots).unwrap();
        let mut lm = EvalModel::new(&loaded.model, &loaded.tokenizer);
        if let Some(max) = want["max_length"].as_u64() {
            lm.max_length = max as usize;
        }
        let options = EvalOptions {
            limit: want["limit"].as_u64().map(|n| n as usize),
            bootstrap_iters: 100_000,
        };
        let result = herd_eval::evaluate(&mut task, &lm, &options, &mut |_, _| {}).unwrap();
        let docs = want["docs"].as_array().unwrap();
        assert_eq!(result.samples.len(), docs.len(), "{name}: documents");
        let (mut worst, mut compared) = (0f64, 0);
        for (sample, want_doc) in result.samples.iter().zip(docs) {
            let windows = match &sample.requests[0] {
                Request::Rolling(text) => lm.rolling_windows(text).unwrap().len(),
                _ => 1,
            };
            let (w, n) = check_sample(name, sample, want_doc, windows);
            worst = worst.max(w);
            compared += n;
        }
        eprintln!("{name}: {compared} log-likelihoods, largest difference {worst:.2e}");
        assert!(
            worst <= LOGPROB_TOLERANCE,
            "{name}: a log-likelihood differs from the harness's by {worst:.2e}"
        );
        // Aggregates: exact for the 0/1 metrics, within the log-likelihoods' tolerance for the
        // perplexities.
        let want_results = want["results"].as_object().unwrap();
        for m in &result.metrics {
            let key = format!("{},{}", m.metric.name(), m.filter);
            let w = want_results[&key].as_f64().unwrap();
            assert!(
                (m.value - w).abs() <= 1e-5 * w.abs().max(1.0),
                "{name}: {key} {} vs the harness's {w}",
                m.value
            );
            let stderr_key = format!("{}_stderr,{}", m.metric.name(), m.filter);
            match (&want_results[&stderr_key], m.stderr) {
                (Value::Number(w), Some(g)) => {
                    let w = w.as_f64().unwrap();
                    assert!(
                        (g - w).abs() <= 1e-4 * w.abs().max(1e-3),
                        "{name}: {stderr_key}"
                    );
                }
                (Value::String(s), None) if s == "N/A" => {}
                (w, g) => panic!("{name}: {stderr_key} {g:?} vs the harness's {w}"),
            }
        }
    }
}

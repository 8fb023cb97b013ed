//! Real clients against `herd serve`, pinned in tools/clients/requirements.lock (a venv that
//! tools/test.sh makes and names in `HERD_CLIENTS_PYTHON`): the `openai` package's chat,
//! streamed chat, tool-call round trip and echoed completion, and lm-evaluation-harness's
//! `local-completions` model with the remote tokenizer on a multiple-choice task of ARC-Easy
//! questions — which runs to the end, with every per-choice log-likelihood equal to
//! `herd score`'s within 1e-4.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{load, Server};
use herd_infer::{GenerateConfig, SamplingConfig, Session};
use herd_serve::ServeSettings;
use herd_tokenizer::chat::{encode_chat, Message, Role};
use herd_tokenizer::Tokenizer;
use serde_json::Value;

/// The pinned clients' Python, or a skip.
fn python() -> Option<PathBuf> {
    herd_util::testing::env_file(
        "HERD_CLIENTS_PYTHON",
        "tools/test.sh makes the venv of tools/clients/requirements.lock and sets it",
    )
}

fn tools() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/clients")
}

/// Runs `command`, failing the test with its output when it fails.
fn run(command: &mut Command) -> String {
    let output = command.output().expect("the client starts");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_openai_package_chats_streams_calls_tools_and_scores() {
    let (Some(python), Some(reference), Some(served)) = (python(), load(), load()) else {
        return;
    };
    let server = Server::start(served, 4, 1024, ServeSettings::default());
    let out = run(Command::new(&python)
        .arg(tools().join("openai_client.py"))
        .arg("--base-url")
        .arg(format!("http://{}/v1", server.address)));
    let out: Value = serde_json::from_str(out.trim()).unwrap();
    // The chat equals herd generate's greedy reply.
    let tokenizer = &reference.tokenizer;
    let ids = encode_chat(
        tokenizer,
        &[Message::new(Role::User, "What is the capital of France?")],
    )
    .unwrap();
    let config = GenerateConfig {
        max_tokens: 24,
        sampling: SamplingConfig::default(),
        stop_tokens: tokenizer.stop_ids().to_vec(),
        top_logprobs: 0,
    };
    let generation = Session::new(&reference.model, 256)
        .generate(&ids, &config, |_| Ok(true))
        .unwrap();
    let tokens: Vec<u32> = generation.tokens.iter().map(|t| t.id).collect();
    assert_eq!(out["chat"], tokenizer.decode(&tokens).unwrap());
    assert_eq!(out["chat_usage"], tokens.len());
    assert_eq!(out["stream"], out["chat"]);
    assert_eq!(out["stream_usage"], out["chat_usage"]);
    // The tool call came back as a call with object arguments, and its answer as text.
    assert_eq!(out["tool_call"]["name"], "get_weather");
    assert!(out["tool_call"]["arguments"].is_object());
    assert!(out["after_tool"].as_str().is_some_and(|t| !t.is_empty()));
    // The echoed prompt's log-probabilities are herd score's.
    let prompt = tokenizer
        .encode_prompt("The capital of France is", true)
        .unwrap();
    let scores = herd_infer::score::score(&reference.model, &prompt, 0).unwrap();
    let completion = &out["completion"];
    let logprobs = completion["token_logprobs"].as_array().unwrap();
    assert_eq!(completion["tokens"], prompt.len() + 4);
    for (score, got) in scores.iter().zip(&logprobs[1..]) {
        assert!((got.as_f64().unwrap() - f64::from(score.logprob)).abs() < 1e-4);
    }
    assert_eq!(out["error"]["status"], 400);
    assert_eq!(out["error"]["param"], "messages");
}

/// lm-evaluation-harness's context/continuation split (`_encode_pair`): trailing spaces of the
/// context move to the continuation; the continuation's ids are those of the whole after the
/// context's.
fn encode_pair(tokenizer: &Tokenizer, context: &str, continuation: &str) -> (Vec<u32>, usize) {
    let trimmed = context.trim_end();
    let moved = &context[trimmed.len()..];
    let whole = tokenizer
        .encode(&format!("{trimmed}{moved}{continuation}"), true)
        .unwrap();
    let context_ids = tokenizer.encode(trimmed, true).unwrap();
    (whole, context_ids.len())
}

#[test]
fn lm_evaluation_harness_runs_a_task_with_herd_scores() {
    let (Some(python), Some(reference), Some(served), Some(arc)) = (
        python(),
        load(),
        load(),
        herd_util::testing::shared("data/eval/arc_easy_test.jsonl"),
    ) else {
        return;
    };
    let server = Server::start(served, 4, 2048, ServeSettings::default());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    let lines: String = std::fs::read_to_string(arc)
        .unwrap()
        .lines()
        .take(16)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&data, lines).unwrap();
    let task = std::fs::read_to_string(tools().join("lm_eval/herd_arc_easy.yaml"))
        .unwrap()
        .replace("DATA_FILE", data.to_str().unwrap());
    let tasks = dir.path().join("tasks");
    std::fs::create_dir(&tasks).unwrap();
    std::fs::write(tasks.join("herd_arc_easy.yaml"), task).unwrap();
    let out = dir.path().join("out");
    run(Command::new(&python)
        .args([
            "-m",
            "lm_eval",
            "run",
            "--model",
            "local-completions",
            "--model_args",
        ])
        .arg(format!(
            "model=herd,base_url=http://{}/v1/completions,tokenizer_backend=remote,\
             num_concurrent=4,max_retries=1,tokenized_requests=True",
            server.address
        ))
        .args([
            "--batch_size",
            "2",
            "--tasks",
            "herd_arc_easy",
            "--log_samples",
        ])
        .arg("--include_path")
        .arg(&tasks)
        .arg("--output_path")
        .arg(&out)
        .env("HF_HOME", dir.path().join("hf"))
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1"));
    let samples = walk(&out, "samples_herd_arc_easy");
    let text = std::fs::read_to_string(&samples).unwrap();
    let tokenizer = &reference.tokenizer;
    let mut compared = 0;
    for line in text.lines() {
        let sample: Value = serde_json::from_str(line).unwrap();
        let arguments = sample["arguments"].as_object().unwrap();
        let responses = sample["filtered_resps"].as_array().unwrap();
        assert_eq!(arguments.len(), responses.len());
        for (k, response) in responses.iter().enumerate() {
            let pair = &arguments[&format!("gen_args_{k}")];
            let (whole, context) = encode_pair(
                tokenizer,
                pair["arg_0"].as_str().unwrap(),
                pair["arg_1"].as_str().unwrap(),
            );
            let scores = herd_infer::score::score(&reference.model, &whole, 1).unwrap();
            let expected: f64 = scores[context - 1..]
                .iter()
                .map(|s| f64::from(s.logprob))
                .sum();
            let greedy = scores[context - 1..].iter().all(|s| s.is_greedy);
            let got: f64 = response[0].as_str().unwrap().parse().unwrap();
            assert!(
                (got - expected).abs() < 1e-4,
                "doc {} choice {k}: lm-eval {got}, herd score {expected}",
                sample["doc_id"]
            );
            assert_eq!(response[1].as_str().unwrap() == "True", greedy);
            compared += 1;
        }
    }
    assert_eq!(compared, 64, "16 questions of 4 choices");
    let results = walk(&out, "results_");
    let results: Value = serde_json::from_str(&std::fs::read_to_string(results).unwrap()).unwrap();
    assert!(results["results"]["herd_arc_easy"]["acc,none"].is_number());
}

/// The file under `dir` (searched depth first) whose name starts with `prefix`.
fn walk(dir: &Path, prefix: &str) -> PathBuf {
    find(dir, prefix).unwrap_or_else(|| panic!("no {prefix}* under {}", dir.display()))
}

fn find(dir: &Path, prefix: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let path = entry.path();
        if path.is_dir() {
            find(&path, prefix)
        } else {
            let name = entry.file_name();
            name.to_string_lossy().starts_with(prefix).then_some(path)
        }
    })
}

//! `herd eval --contamination`: the items whose text is in the corpus are the contaminated
//! ones, and the scores reported for the clean and the contaminated items are those of the
//! documents' own samples.

use std::path::Path;

use serde_json::Value;

mod common;
use common::{herd, pretrain_on_alice};

#[test]
fn items_found_in_the_corpus_are_reported_apart() {
    let dir = tempfile::tempdir().unwrap();
    let Some(data) = herd_util::testing::shared("data/eval") else {
        return;
    };
    let Some(model) = pretrain_on_alice(dir.path(), 16, 256) else {
        return;
    };
    // The corpus: Alice, and the first 6 ARC-Easy questions as the task file checks them
    // (its doc_to_decontamination_query, "Question: …\nAnswer:"), in a JSONL file.
    let questions = std::fs::read_to_string(data.join("arc_easy_test.jsonl")).unwrap();
    let mut corpus = std::fs::read_to_string(dir.path().join("alice.jsonl")).unwrap();
    for line in questions.lines().take(6) {
        let doc: Value = serde_json::from_str(line).unwrap();
        let text = format!("Question: {}\nAnswer:", doc["question"].as_str().unwrap());
        corpus.push_str(&serde_json::json!({ "text": text }).to_string());
        corpus.push('\n');
    }
    let corpus_path = dir.path().join("corpus.jsonl");
    std::fs::write(&corpus_path, corpus).unwrap();
    let results = dir.path().join("out/results.json");
    let s = |p: &Path| p.display().to_string();
    herd(&[
        "eval",
        "-m",
        &s(&model),
        "--tasks",
        "arc_easy",
        "--data-dir",
        &s(&data),
        "--limit",
        "30",
        "--contamination",
        &s(&corpus_path),
        // Whole items only: with this small vocabulary, phrases shared by questions ("Which of
        // the following…") cover half of some other short questions' tokens.
        "--contamination-threshold",
        "0.95",
        "--output",
        &s(&results),
        "--log-samples",
        "--quiet",
    ]);
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap();
    let report = &json["contamination"]["arc_easy"];
    assert_eq!(report["items"], 30);
    assert_eq!(report["contaminated_items"], 6, "{report}");
    assert_eq!(report["ngram"], 8);
    // The clean and contaminated scores are the means of the samples' own scores.
    let samples = std::fs::read_to_string(dir.path().join("out/samples_arc_easy.jsonl")).unwrap();
    let acc: Vec<f64> = samples
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["acc"]
                .as_f64()
                .unwrap()
        })
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let scores = &report["scores"];
    let close = |a: &Value, b: f64| (a.as_f64().unwrap() - b).abs() < 1e-12;
    assert!(
        close(&scores["contaminated"]["acc,none"], mean(&acc[..6])),
        "{scores}"
    );
    assert!(
        close(&scores["clean"]["acc,none"], mean(&acc[6..])),
        "{scores}"
    );
}

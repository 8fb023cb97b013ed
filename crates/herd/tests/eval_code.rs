//! `herd eval` on a code task: SmolLM2 samples several completions of HumanEval prompts, each
//! becomes a program (prompt + completion + tests) run in the sandbox, and pass@k is the
//! unbiased estimator over the programs' outcomes as logged; the same seed gives the same run.

use std::path::Path;

use serde_json::Value;

mod common;
use common::herd;

/// HumanEval as the built-in `humaneval_20`, with fewer samples and shorter completions.
const TASK: &str = r#"
task: humaneval_small
dataset_path: json
dataset_kwargs: {data_files: {test: HumanEval.jsonl.gz}}
unsafe_code: true
output_type: generate_until
test_split: test
doc_to_text: "{{prompt}}"
doc_to_target: "{{test}}\ncheck({{entry_point}})"
metric_list:
  - {metric: pass_at_k, aggregation: mean, higher_is_better: true, k: [1, 2]}
generation_kwargs:
  until: ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
  max_gen_toks: 64
  do_sample: true
  temperature: 0.8
  top_p: 0.95
repeats: 3
filter_list:
  - name: create_test
    filter: [{function: build_predictions}]
"#;

fn run(model: &Path, data: &Path, dir: &Path, seed: &str) -> (Value, Vec<Value>) {
    let task = dir.join("humaneval_small.yaml");
    std::fs::write(&task, TASK).unwrap();
    let out = dir.join(format!("seed{seed}/results.json"));
    let s = |p: &Path| p.display().to_string();
    herd(&[
        "eval",
        "-m",
        &s(model),
        "--tasks",
        &s(&task),
        "--data-dir",
        &s(data),
        "--limit",
        "3",
        "--seed",
        seed,
        "--output",
        &s(&out),
        "--log-samples",
        "--quiet",
    ]);
    let results: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let samples = std::fs::read_to_string(out.with_file_name("samples_humaneval_small.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (results, samples)
}

#[test]
fn sampled_programs_are_run_and_scored_by_pass_at_k() {
    let model = herd_util::testing::asset("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let (Some(model), Some(data)) = (model, herd_util::testing::shared("data/eval")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (results, samples) = run(&model, &data, dir.path(), "7");
    assert_eq!(samples.len(), 3);
    let mut means = [0.0; 2];
    for sample in &samples {
        let prompt = sample["doc"]["prompt"].as_str().unwrap();
        let generated = sample["resps"][0].as_array().unwrap();
        let programs = sample["filtered_resps"][0].as_array().unwrap();
        let outcomes = sample["code_results"].as_array().unwrap();
        assert_eq!(generated.len(), 3);
        assert_eq!(outcomes.len(), 3);
        for (program, text) in programs.iter().zip(generated) {
            assert_eq!(
                program.as_str().unwrap(),
                format!("{prompt}{}", text.as_str().unwrap())
            );
        }
        // The unbiased estimator over the logged outcomes.
        let c = outcomes.iter().filter(|o| *o == "passed").count();
        // pass@1 = c/3; pass@2 = 1 - C(3-c, 2)/C(3, 2), where C(3-c, 2) = (3-c)(2-c)/2.
        let failing_pairs = if c >= 2 {
            0.0
        } else {
            ((3 - c) * (2 - c)) as f64 / 2.0
        };
        let expected = [c as f64 / 3.0, 1.0 - failing_pairs / 3.0];
        for (k, want) in [1, 2].iter().zip(expected) {
            let got = sample[format!("pass@{k}")].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-12,
                "pass@{k}: {got} vs {want} ({outcomes:?})"
            );
        }
        means[0] += expected[0] / 3.0;
        means[1] += expected[1] / 3.0;
    }
    let scores = &results["results"]["humaneval_small"];
    for (k, mean) in [1, 2].iter().zip(means) {
        let got = scores[format!("pass@{k},create_test")].as_f64().unwrap();
        assert!((got - mean).abs() < 1e-12, "pass@{k}: {got} vs {mean}");
        assert!(scores[format!("pass@{k}_stderr,create_test")].is_number());
    }
    // Sampling is seeded: the same seed generates the same programs.
    let (_, again) = run(&model, &data, dir.path(), "7");
    for (a, b) in samples.iter().zip(&again) {
        assert_eq!(a["resps"], b["resps"]);
    }
}

//! Fuzzing the post-training readers: mutated conversation and preference records (OpenAI
//! messages with tool calls, ShareGPT, Alpaca, LLaMA-Factory pairs, prompt/chosen/rejected,
//! HH-RLHF transcripts) must parse or be refused with a reason, and what parses must tokenize
//! with its loss mask; mutated post-training recipes must load or be refused. Regression cases
//! live in `tests/fuzz/<target>/`; `HERD_FUZZ_CASES=N` runs more cases.

use std::path::{Path, PathBuf};

use herd_align::conversation::{parse_record, Example, Format};
use herd_align::masks::{dpo_example, sft_example};
use herd_align::rounds::PosttrainRecipe;
use herd_tokenizer::chat::ToolPromptFormat;
use herd_tokenizer::train::{ranks_file_text, train_ranks};
use herd_tokenizer::Tokenizer;
use herd_util::fuzz;

fn regressions(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz")
        .join(target)
}

const RECORDS: [&str; 6] = [
    r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Weather?"}]}, {"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}, {"role": "tool", "content": "18C"}, {"role": "assistant", "content": "18 °C."}]}"#,
    r#"{"system": "S", "conversations": [{"from": "human", "value": "Find a recipe"}, {"from": "function_call", "value": "{\"name\": \"search\", \"arguments\": {\"q\": \"rice\"}}"}, {"from": "observation", "value": "{}"}, {"from": "gpt", "value": "None found."}]}"#,
    r#"{"instruction": "Translate", "input": "chat", "output": "cat", "history": [["hi", "hello"]]}"#,
    r#"{"conversations": [{"from": "human", "value": "Q"}], "chosen": {"from": "gpt", "value": "good"}, "rejected": {"from": "gpt", "value": "bad"}}"#,
    r#"{"prompt": "Q", "chosen": "good", "rejected": "bad", "edited": "best"}"#,
    r#"{"chosen": "\n\nHuman: Hi ü\n\nAssistant: Hello!\n\nHuman: Joke?\n\nAssistant: A pun.", "rejected": "\n\nHuman: Hi ü\n\nAssistant: Hello!\n\nHuman: Joke?\n\nAssistant: No."}"#,
];

#[test]
fn conversation_records() {
    let texts: Vec<String> = RECORDS.iter().map(|r| r.to_string()).collect();
    let ranks = train_ranks(texts.iter(), 700, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.model");
    std::fs::write(&path, ranks_file_text(&ranks)).unwrap();
    let tokenizer = Tokenizer::llama3(&path).unwrap();
    let seeds: Vec<Vec<u8>> = RECORDS.iter().map(|r| r.as_bytes().to_vec()).collect();
    fuzz::run("records", &seeds, &regressions("records"), 1000, |bytes| {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
            return;
        };
        match parse_record(&value, Format::Auto) {
            Ok(Example::Dialog(dialog)) => {
                let _ = sft_example(&tokenizer, &dialog, ToolPromptFormat::Json);
            }
            Ok(Example::Preference(pair)) => {
                let _ = dpo_example(&tokenizer, &pair, ToolPromptFormat::Json);
            }
            Err(_) => {}
        }
    });
}

#[test]
fn posttrain_recipes() {
    let seed = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes/posttrain-tiny.toml"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("recipe.toml");
    fuzz::run(
        "posttrain_recipe",
        &[seed],
        &regressions("posttrain_recipe"),
        500,
        |bytes| {
            std::fs::write(&case, bytes).unwrap();
            let _ = PosttrainRecipe::load(&case);
        },
    );
}

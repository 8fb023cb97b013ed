//! Fuzzing the tokenizer readers and the chat parsers: mutated vocabularies in Meta's tiktoken
//! format (trained here by herd's trainer) and HF `tokenizer.json` files must load or fail with
//! an error, and a loaded tokenizer must encode and decode without panicking; mutated assistant
//! replies (the 88 `llama_models` parse cases) and chat templates must parse or be refused.
//! Regression cases live in `tests/fuzz/<target>/`; `HERD_FUZZ_CASES=N` runs more cases.

use std::path::{Path, PathBuf};

use herd_tokenizer::chat::tool_parse::parse_assistant_reply;
use herd_tokenizer::chat::{template, Message, Role, StopReason};
use herd_tokenizer::train::{ranks_file_text, train_ranks};
use herd_tokenizer::Tokenizer;
use herd_util::fuzz;

fn regressions(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz")
        .join(target)
}

/// Whatever loads from `path` encodes text (with and without special tokens) and decodes ids.
fn load_and_use(path: &Path) {
    let Ok(tok) = Tokenizer::from_path(path) else {
        return;
    };
    for allow in [false, true] {
        let _ = tok.encode("Hello wörld <|eot_id|> 123\n", allow);
    }
    let n = tok.vocab_size() as u32;
    let _ = tok.decode(&[0, 1, n.saturating_sub(1), n, n + 7, u32::MAX]);
    let mut stream = herd_tokenizer::StreamDecoder::new(&tok);
    for id in [0, 200, n.saturating_sub(1), n + 1] {
        let _ = stream.push(id);
    }
    let _ = stream.finish();
}

#[test]
fn tiktoken_vocabularies() {
    let texts = [
        "The quick brown fox jumps over the lazy dog. Ünïcödé, 日本語, emoji 🦙.",
        "fn main() { println!(\"{}\", 1 + 2); } // code",
    ];
    let ranks = train_ranks(texts.iter(), 600, 1).unwrap();
    let seed = ranks_file_text(&ranks).into_bytes();
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("tokenizer.model");
    fuzz::run(
        "tiktoken",
        &[seed],
        &regressions("tiktoken"),
        300,
        |bytes| {
            std::fs::write(&case, bytes).unwrap();
            load_and_use(&case);
        },
    );
}

/// A small byte-level BPE in the HF format, with a ChatML end token and a chat template.
const TOKENIZER_JSON: &str = r#"{"version": "1.0", "truncation": null, "padding": null,
 "added_tokens": [{"id": 7, "content": "<|im_end|>", "single_word": false, "lstrip": false,
   "rstrip": false, "normalized": false, "special": true}],
 "normalizer": null,
 "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
 "post_processor": null,
 "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
 "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
   "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
   "vocab": {"H": 0, "e": 1, "l": 2, "o": 3, "He": 4, "ll": 5, "Ġ": 6, "<|im_end|>": 7},
   "merges": ["H e", "l l"]}}"#;

const TOKENIZER_CONFIG: &str = r#"{"bos_token": "<|im_end|>", "eos_token": "<|im_end|>",
 "chat_template": "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"}"#;

#[test]
fn tokenizer_json_files() {
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("tokenizer.json");
    std::fs::write(dir.path().join("tokenizer_config.json"), TOKENIZER_CONFIG).unwrap();
    let seed = TOKENIZER_JSON.as_bytes().to_vec();
    std::fs::write(&case, &seed).unwrap();
    assert!(Tokenizer::from_path(&case).is_ok(), "the seed itself loads");
    fuzz::run(
        "tokenizer_json",
        &[seed],
        &regressions("tokenizer_json"),
        300,
        |bytes| {
            std::fs::write(&case, bytes).unwrap();
            load_and_use(&case);
        },
    );
    std::fs::write(&case, TOKENIZER_JSON).unwrap();
    let config = dir.path().join("tokenizer_config.json");
    let seed = TOKENIZER_CONFIG.as_bytes().to_vec();
    fuzz::run(
        "tokenizer_config",
        &[seed],
        &regressions("tokenizer_config"),
        300,
        |bytes| {
            std::fs::write(&config, bytes).unwrap();
            if let Ok(tok) = Tokenizer::from_path(&case) {
                let messages = [Message::new(Role::User, "Hello")];
                let _ = herd_tokenizer::chat::encode_chat(&tok, &messages);
            }
        },
    );
}

#[test]
fn chat_templates() {
    let config: serde_json::Value = serde_json::from_str(TOKENIZER_CONFIG).unwrap();
    let seeds =
        vec![
        config["chat_template"].as_str().unwrap().as_bytes().to_vec(),
        b"{% set x = messages | length %}{% for i in range(x * 3) %}{{ loop.index }}{% endfor %}"
            .to_vec(),
    ];
    let messages = [
        Message::new(Role::System, "Be brief."),
        Message::new(Role::User, "Hi"),
    ];
    fuzz::run(
        "chat_template",
        &seeds,
        &regressions("chat_template"),
        300,
        |bytes| {
            let text = String::from_utf8_lossy(bytes);
            let _ = template::render(&text, &messages, true, "<s>", "</s>");
        },
    );
}

#[test]
fn assistant_replies() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/llama3_chat_format.json")).unwrap();
    let seeds: Vec<Vec<u8>> = fixture["parse_cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["content"].as_str().unwrap().as_bytes().to_vec())
        .collect();
    assert_eq!(seeds.len(), 88);
    fuzz::run(
        "assistant_reply",
        &seeds,
        &regressions("assistant_reply"),
        1000,
        |bytes| {
            let text = String::from_utf8_lossy(bytes);
            for stop in [
                StopReason::EndOfTurn,
                StopReason::EndOfMessage,
                StopReason::OutOfTokens,
            ] {
                let _ = parse_assistant_reply(&text, stop);
            }
        },
    );
}

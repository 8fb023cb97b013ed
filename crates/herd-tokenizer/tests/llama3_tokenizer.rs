//! Meta's Llama 3 tokenizer against `llama_models`' own ids (fixture made by
//! `tools/fixtures/make_tokenizer_fixture.py`) and llama.cpp's test vectors.

use herd_tokenizer::Tokenizer;
use herd_util::testing::asset;
use serde_json::Value;

fn text_of(case: &Value) -> String {
    if let Some(text) = case.get("text") {
        return text.as_str().unwrap().to_string();
    }
    let r = &case["repeat"];
    format!(
        "{}{}{}",
        r["prefix"].as_str().unwrap(),
        r["unit"]
            .as_str()
            .unwrap()
            .repeat(r["count"].as_u64().unwrap() as usize),
        r["suffix"].as_str().unwrap()
    )
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn encode_and_decode_match_llama_models() {
    let Some(path) = asset("llama3/tokenizer.model") else {
        return;
    };
    let tokenizer = Tokenizer::llama3(&path).unwrap();
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/llama3_tokenizer.json")).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let text = text_of(case);
        let allow = case["allowed_special"] == "all";
        let mut got = tokenizer.encode(&text, allow).unwrap();
        if case["bos"] == true {
            got.insert(0, tokenizer.bos_id().unwrap());
        }
        if case["eos"] == true {
            got.push(tokenizer.token_id("<|end_of_text|>").unwrap());
        }
        if got != ids(&case["ids"]) {
            failures.push(case["name"].as_str().unwrap().to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ: {failures:?}",
        failures.len(),
        cases.len()
    );
    for case in fixture["decode_cases"].as_array().unwrap() {
        assert_eq!(
            tokenizer.decode(&ids(&case["ids"])).unwrap(),
            case["text"].as_str().unwrap(),
            "{}",
            case["name"]
        );
    }
}

#[test]
fn llama_cpp_vocab_test_vectors() {
    let (Some(model), Some(inp), Some(out)) = (
        asset("llama3/tokenizer.model"),
        asset("llama.cpp/ggml-vocab-llama-bpe.gguf.inp"),
        asset("llama.cpp/ggml-vocab-llama-bpe.gguf.out"),
    ) else {
        return;
    };
    let tokenizer = Tokenizer::llama3(&model).unwrap();
    let inputs = std::fs::read_to_string(inp).unwrap();
    let outputs = std::fs::read_to_string(out).unwrap();
    let inputs: Vec<&str> = inputs.split("\n__ggml_vocab_test__\n").collect();
    let outputs: Vec<&str> = outputs.lines().collect();
    assert_eq!(
        inputs.len(),
        outputs.len() + 1,
        "the .inp file ends with a separator"
    );
    for (text, expected) in inputs.iter().zip(&outputs) {
        let expected: Vec<u32> = expected
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect();
        assert_eq!(tokenizer.encode(text, false).unwrap(), expected, "{text:?}");
    }
}

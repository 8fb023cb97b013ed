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
    check_against_llama_models(&Tokenizer::llama3(&path).unwrap(), false);
}

/// The HF files herd writes for Meta's tokenizer give Meta's ids, read by the `tokenizers`
/// crate (HF's own BPE): through herd's loader, and through the post-processor that adds BOS
/// as transformers' `encode` does. The cases with runs longer than 25,000 characters, which Meta
/// cuts before the BPE and HF's files (Meta's own included) cannot, must round-trip exactly.
#[test]
fn the_hf_files_of_metas_tokenizer_give_its_ids() {
    let Some(path) = asset("llama3/tokenizer.model") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let json = Tokenizer::llama3(&path)
        .unwrap()
        .save_hf(dir.path())
        .unwrap();
    let exported = Tokenizer::from_path(&json).unwrap();
    assert!(!exported.is_llama3());
    assert_eq!(exported.bos_id(), Some(128_000));
    check_against_llama_models(&exported, true);
    let hf = tokenizers::Tokenizer::from_file(&json).unwrap();
    let with_bos = hf.encode("This is a test sentence.", true).unwrap();
    assert_eq!(
        with_bos.get_ids(),
        [128000, 2028, 374, 264, 1296, 11914, 13]
    );
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["bos_token"], "<|begin_of_text|>");
}

/// Whether Meta's tokenizer cuts `text` before its BPE: a run of more than 25,000 whitespace or
/// non-whitespace characters (Python's `isspace`), or more than 400,000 characters in all.
fn meta_cuts(text: &str) -> bool {
    let space = |c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c);
    let (mut run, mut last, mut longest) = (0usize, None, 0usize);
    for c in text.chars() {
        let s = space(c);
        run = if last == Some(s) { run + 1 } else { 1 };
        last = Some(s);
        longest = longest.max(run);
    }
    longest > 25_000 || text.chars().count() > 400_000
}

/// Every fixture case and every decode case give Meta's ids and text. With `hf_files`, the
/// cases Meta cuts before its BPE (which HF's files cannot do) are held to a lossless round trip
/// instead of Meta's ids.
fn check_against_llama_models(tokenizer: &Tokenizer, hf_files: bool) {
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
        let name = case["name"].as_str().unwrap();
        let right = if hf_files && meta_cuts(&text) {
            let plain = tokenizer.encode(&text, allow).unwrap();
            tokenizer.decode(&plain).unwrap() == text
        } else {
            got == ids(&case["ids"])
        };
        if !right {
            failures.push(name.to_string());
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

//! SmolLM2-135M-Instruct from its GGUF against llama.cpp on the same file, with the tolerances of
//! `../shared/design/decisions.md`: the embedded tokenizer gives llama.cpp's prompt ids; fed
//! llama.cpp's greedy tokens (`tools/reference/llamacpp_greedy.py`), herd's top 5 holds
//! llama.cpp's token at every step; the perplexity of a held-out text is within 1% of
//! `llama-perplexity`'s on the same file, text and context (`tools/reference/
//! llamacpp_perplexity.py`). Quantized files are not held to greedy identity: ggml rounds every
//! activation to 8 bits, which moves logits by tenths and flips close choices both ways; F16
//! files are — wherever llama.cpp's top-2 gap is at least 0.1.

use std::path::Path;

use candle_core::{DType, Device};
use herd_infer::sampling::argmax;
use herd_infer::{load, GenerateConfig, SamplingConfig, Session};
use herd_model::{Llama, PagedKv, PagedSeq};
use serde_json::Value;

const NEAR_TIE: f64 = 0.1;

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// One sequence on the paged cache, as generation and the server run it.
struct Decoder<'m> {
    model: &'m Llama,
    kv: PagedKv,
    table: Vec<u32>,
    cached: usize,
}

impl<'m> Decoder<'m> {
    fn new(model: &'m Llama, capacity: usize) -> Decoder<'m> {
        let (kv, table) = PagedKv::single(model.config(), capacity);
        Decoder {
            model,
            kv,
            table,
            cached: 0,
        }
    }

    /// The logits after `tokens`, fed after what is cached.
    fn step(&mut self, tokens: &[u32]) -> Vec<f32> {
        let seq = PagedSeq {
            blocks: &self.table,
            cached: self.cached,
        };
        let hidden = self.model.step(&[tokens], &mut self.kv, &[seq]).unwrap();
        self.cached += tokens.len();
        self.model
            .logits(&hidden)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }
}

fn top5(logits: &[f32]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    order.truncate(5);
    order
}

/// Checks every case of a llama.cpp fixture against `gguf`, feeding llama.cpp's tokens: at every
/// step llama.cpp's token must be in herd's top 5 and herd's top 2 in llama.cpp's top 5; with
/// `decisive`, where llama.cpp's top-2 gap is at least that, herd's greedy token must be
/// llama.cpp's. Returns (decisive steps, steps checked, largest top-5 logit difference).
fn check(gguf: &Path, fixture: &Value, decisive: Option<f64>) -> (usize, usize, f64) {
    let loaded = load(
        gguf,
        None,
        DType::F32,
        herd_infer::Quantized::Keep,
        &Device::Cpu,
    )
    .unwrap();
    let (model, tokenizer) = (&loaded.model, &loaded.tokenizer);
    let (mut exact, mut total, mut worst) = (0, 0, 0f64);
    for case in fixture["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let allow_special = case["parse_special"].as_bool().unwrap();
        let prompt_ids = tokenizer.encode_prompt(prompt, allow_special).unwrap();
        assert_eq!(
            prompt_ids,
            ids(&case["prompt_ids"]),
            "prompt ids of {prompt:?}"
        );
        let steps = case["steps"].as_array().unwrap();
        let mut decoder = Decoder::new(model, prompt_ids.len() + steps.len());
        let mut logits = decoder.step(&prompt_ids);
        for (s, step) in steps.iter().enumerate() {
            let reference = step["id"].as_u64().unwrap() as u32;
            let reference_top5: Vec<(u32, f64)> = step["top5"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_u64().unwrap() as u32, p[1].as_f64().unwrap()))
                .collect();
            let mut step_worst = 0f64;
            for &(t, l) in &reference_top5 {
                step_worst = step_worst.max((logits[t as usize] as f64 - l).abs());
            }
            if std::env::var("HERD_DEBUG_LOGITS").is_ok() && s < 8 {
                eprintln!(
                    "{prompt:.12?} step {s}: gap {:.3} max top-5 diff {step_worst:.3}",
                    step["gap"].as_f64().unwrap()
                );
            }
            worst = worst.max(step_worst);
            let ours = top5(&logits);
            let theirs: Vec<u32> = reference_top5.iter().map(|p| p.0).collect();
            assert!(
                ours.contains(&reference) && ours[..2].iter().all(|t| theirs.contains(t)),
                "{prompt:?} step {s}: top-5 {ours:?} vs llama.cpp {theirs:?}"
            );
            if decisive.is_some_and(|d| step["gap"].as_f64().unwrap() >= d) {
                assert_eq!(
                    argmax(&logits),
                    reference,
                    "{prompt:?} step {s}: greedy token differs where llama.cpp is decisive"
                );
                exact += 1;
            }
            total += 1;
            logits = decoder.step(&[reference]);
        }
    }
    (exact, total, worst)
}

#[test]
fn q4_1_follows_llama_cpp() {
    let Some(gguf) = herd_util::testing::asset("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/llamacpp_smollm2_q4_1.json")).unwrap();
    let (_, total, worst) = check(&gguf, &fixture, None);
    eprintln!("Q4_1: llama.cpp's token in herd's top 5 at all {total} steps; max top-5 logit difference {worst:.3}");
}

/// herd's perplexity of `model` on the fixture text against llama-perplexity's.
fn perplexity_within_one_percent(model: &Path) -> (f64, f64) {
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/llamacpp_perplexity.json")).unwrap();
    let name = model.file_name().unwrap().to_string_lossy();
    let reference = fixture["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == *name)
        .unwrap_or_else(|| panic!("no llama-perplexity result for {name}"));
    let text = include_str!("fixtures/persuasion_chapter5.txt");
    let context = fixture["context"].as_u64().unwrap() as usize;
    let loaded = load(
        model,
        None,
        DType::F32,
        herd_infer::Quantized::Keep,
        &Device::Cpu,
    )
    .unwrap();
    let ours = herd_infer::perplexity::perplexity(
        &loaded.model,
        &loaded.tokenizer,
        text,
        context,
        None,
        |_, _, _| {},
    )
    .unwrap();
    let theirs = reference["ppl"].as_f64().unwrap();
    assert_eq!(ours.chunks, reference["running"].as_array().unwrap().len());
    let ratio = ours.ppl / theirs;
    assert!(
        (ratio - 1.0).abs() < 0.01,
        "{name}: perplexity {:.4} vs llama.cpp's {theirs:.4}",
        ours.ppl
    );
    (ours.ppl, theirs)
}

#[test]
fn q4_1_perplexity_is_llama_cpps() {
    let Some(gguf) = herd_util::testing::asset("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let (ours, theirs) = perplexity_within_one_percent(&gguf);
    eprintln!("Q4_1 perplexity: herd {ours:.4}, llama.cpp {theirs:.4}");
}

/// Q8_0 and F16 versions made by llama.cpp's tools, which no package ships, so CI cannot have
/// them: the test is ignored (and listed as such by `cargo test`) unless asked for with
/// `HERD_PEER_MODELS=<folder> cargo test -- --ignored` (tools/bench/README.md makes the files).
#[test]
#[ignore = "needs llama.cpp's Q8_0 and F16 SmolLM2 files in HERD_PEER_MODELS (tools/bench/README.md)"]
fn q8_0_and_f16_follow_llama_cpp() {
    let dir = std::env::var("HERD_PEER_MODELS")
        .expect("HERD_PEER_MODELS names the folder with llama.cpp's Q8_0 and F16 files");
    for (file, fixture) in [
        (
            "SmolLM2-135M-Instruct.Q8_0.gguf",
            include_str!("fixtures/llamacpp_smollm2_q8_0.json"),
        ),
        (
            "SmolLM2-135M-Instruct.F16.gguf",
            include_str!("fixtures/llamacpp_smollm2_f16.json"),
        ),
    ] {
        let decisive = file.contains("F16").then_some(NEAR_TIE);
        let path = Path::new(&dir).join(file);
        let (exact, total, worst) = check(&path, &serde_json::from_str(fixture).unwrap(), decisive);
        let (ours, theirs) = perplexity_within_one_percent(&path);
        eprintln!("{file}: top 5 at all {total} steps, greedy identical on {exact} decisive steps; max top-5 logit difference {worst:.3}; perplexity {ours:.4} vs {theirs:.4}");
    }
}

#[test]
fn chat_prompt_is_the_gguf_template() {
    let Some(gguf) = herd_util::testing::asset("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let loaded = load(
        &gguf,
        None,
        DType::F32,
        herd_infer::Quantized::Keep,
        &Device::Cpu,
    )
    .unwrap();
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/llamacpp_smollm2_q4_1.json")).unwrap();
    let chat = fixture["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["parse_special"] == true)
        .unwrap();
    // SmolLM2's ChatML template adds its default system prompt.
    let messages = vec![herd_tokenizer::chat::Message::new(
        herd_tokenizer::chat::Role::User,
        "What is the capital of France?",
    )];
    let prompt = herd_tokenizer::chat::encode_chat(&loaded.tokenizer, &messages).unwrap();
    assert_eq!(prompt, ids(&chat["prompt_ids"]));
    // A session generates on the cache what step-by-step decoding gives.
    let config = GenerateConfig {
        max_tokens: 12,
        sampling: SamplingConfig::default(),
        stop_tokens: loaded.tokenizer.stop_ids().to_vec(),
        top_logprobs: 3,
    };
    let mut session = Session::new(&loaded.model, 256);
    let generation = session.generate(&prompt, &config, |_| Ok(true)).unwrap();
    let mut decoder = Decoder::new(&loaded.model, 256);
    let mut logits = decoder.step(&prompt);
    for token in &generation.tokens {
        assert_eq!(token.id, argmax(&logits));
        assert_eq!(token.top[0].0, token.id);
        logits = decoder.step(&[token.id]);
    }
    // It ran to the token limit, or stopped where step-by-step decoding picks a stop token
    // (the answer can end early: this near-tie prompt is not one the greedy test compares).
    match generation.stop_token {
        Some(stop) => {
            assert_eq!(stop, argmax(&logits));
            assert!(loaded.tokenizer.stop_ids().contains(&stop));
        }
        None => assert_eq!(generation.tokens.len(), 12),
    }
}

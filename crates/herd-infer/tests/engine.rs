//! The serving engine against `Session::generate` (what `herd generate` runs): requests of mixed
//! lengths and settings — greedy, seeded sampling with a repetition penalty, a prompt longer
//! than a prefill chunk, stop tokens — run concurrently, some joining while others decode, some
//! cancelled; every finished request's tokens, log-probabilities and ending equal its solo run's,
//! bit for bit on quantized weights. Requests that ask for their prompt's scores (some with a
//! budget of 0, scoring only) get `herd score`'s (to 1e-4; both read on the paged cache in the
//! same chunks, so in fact bit for bit).

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device};
use herd_infer::engine::{Engine, EngineConfig, Event, Request};
use herd_infer::{GenerateConfig, SamplingConfig, Session};
use herd_model::{seeded_weights, Llama, LlamaConfig, Weight, Weights};

/// A small random model with Q8_0 matrices (what a quantized GGUF gives herd's kernels).
fn model() -> Llama {
    let config = LlamaConfig {
        vocab_size: 128,
        max_seq_len: 2048,
        ..seeded_weights::small_config()
    };
    let dense = seeded_weights::weights(&config, &Device::Cpu).unwrap();
    let mut weights = Weights::new("<seeded Q8_0>");
    for (name, weight) in dense.iter() {
        let tensor = weight.to_dense(DType::F32).unwrap();
        let weight = if tensor.rank() == 2 {
            Weight::Quantized(Arc::new(
                QTensor::quantize(&tensor, GgmlDType::Q8_0).unwrap(),
            ))
        } else {
            weight.clone()
        };
        weights.insert(name.clone(), weight);
    }
    Llama::load(config, &weights, DType::F32, &Device::Cpu).unwrap()
}

fn request(i: u32) -> Request {
    let len = [5, 40, 1, 17, 600, 9, 3, 120][i as usize % 8];
    let prompt: Vec<u32> = (0..len).map(|t| (t * 31 + i * 7 + 1) % 128).collect();
    let sampling = if i.is_multiple_of(2) {
        SamplingConfig::default()
    } else {
        SamplingConfig {
            temperature: 0.9,
            top_k: 20,
            top_p: 0.9,
            repetition_penalty: 1.3,
            presence_penalty: if i % 4 == 3 { 0.5 } else { 0.0 },
            frequency_penalty: if i % 4 == 3 { 0.2 } else { 0.0 },
            seed: u64::from(i),
            ..SamplingConfig::default()
        }
    };
    Request {
        prompt,
        config: GenerateConfig {
            max_tokens: if i % 7 == 6 {
                0
            } else {
                8 + (i as usize % 5) * 6
            },
            sampling,
            stop_tokens: if i.is_multiple_of(3) {
                vec![5, 77]
            } else {
                vec![]
            },
            top_logprobs: 3,
        },
        prompt_logprobs: (i % 4 == 1 || i % 7 == 6).then_some(2),
    }
}

/// What a request gives alone: (ids, logprob bits, top ids, stop token).
type Outcome = (Vec<u32>, Vec<u32>, Vec<Vec<u32>>, Option<u32>);

fn solo(model: &Llama, r: &Request) -> Outcome {
    if r.config.max_tokens == 0 {
        return (Vec::new(), Vec::new(), Vec::new(), None);
    }
    let mut session = Session::new(model, (r.prompt.len() + r.config.max_tokens).min(2048));
    let g = session
        .generate(&r.prompt, &r.config, |_| Ok(true))
        .unwrap();
    (
        g.tokens.iter().map(|t| t.id).collect(),
        g.tokens.iter().map(|t| t.logprob.to_bits()).collect(),
        g.tokens
            .iter()
            .map(|t| t.top.iter().map(|p| p.0).collect())
            .collect(),
        g.stop_token,
    )
}

#[test]
fn concurrent_requests_give_exactly_their_solo_tokens() {
    let model = Arc::new(model());
    let requests: Vec<Request> = (0..24).map(request).collect();
    let expected: Vec<Outcome> = requests.iter().map(|r| solo(&model, r)).collect();
    let engine = Engine::start(
        model.clone(),
        EngineConfig {
            max_running: 6,
            context: 2048,
            max_waiting: 64,
            prefill_tokens_per_step: 512,
        },
    );
    let channels: Vec<_> = requests
        .iter()
        .map(|r| engine.submit(r.clone()).unwrap())
        .collect();
    let (mut cancelled, mut scored_requests) = (0, 0);
    for (i, channel) in channels.into_iter().enumerate() {
        let (mut ids, mut bits, mut tops, mut stop) = (Vec::new(), Vec::new(), Vec::new(), None);
        // Every fifth client goes away after its second token.
        let leaves = i % 5 == 4;
        let mut channel = channel;
        let mut scored = None;
        while let Some(event) = channel.blocking_recv() {
            match event {
                Event::Prompt(scores) => {
                    assert!(ids.is_empty(), "request {i}: prompt scores after tokens");
                    scored = Some(scores);
                }
                Event::Token(t) => {
                    ids.push(t.id);
                    bits.push(t.logprob.to_bits());
                    tops.push(t.top.iter().map(|p| p.0).collect());
                    if leaves && ids.len() == 2 {
                        break;
                    }
                }
                Event::Finished(f) => {
                    stop = f.stop.map(|t| t.id);
                    assert_eq!(f.completion_tokens, ids.len());
                    assert_eq!(f.prompt_tokens, requests[i].prompt.len());
                }
                Event::Failed(e) => panic!("request {i} failed: {e}"),
            }
        }
        if let Some(k) = requests[i].prompt_logprobs {
            let scores = scored.unwrap_or_else(|| panic!("request {i}: no prompt scores"));
            let expected = if requests[i].prompt.len() < 2 {
                Vec::new()
            } else {
                herd_infer::score::score(&model, &requests[i].prompt, k).unwrap()
            };
            assert_eq!(scores.len(), expected.len(), "request {i}");
            for (got, want) in scores.iter().zip(&expected) {
                assert_eq!((got.position, got.token), (want.position, want.token));
                assert!(
                    (got.logprob - want.logprob).abs() < 1e-4,
                    "request {i} at {}: {} vs {}",
                    got.position,
                    got.logprob,
                    want.logprob
                );
                assert_eq!(got.top.len(), k);
            }
            scored_requests += 1;
        } else {
            assert!(scored.is_none());
        }
        if leaves && ids.len() == 2 {
            cancelled += 1;
            assert_eq!(ids[..], expected[i].0[..2], "request {i} before it left");
            continue;
        }
        assert_eq!((ids, bits, tops, stop), expected[i], "request {i}");
    }
    assert!(cancelled >= 3);
    assert!(scored_requests >= 8);
    // Everything ends: the cancelled sequences are dropped at their next token.
    let stats = engine.stats();
    for _ in 0..200 {
        if stats.running.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(stats.running.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(stats.waiting.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(stats.requests.load(std::sync::atomic::Ordering::SeqCst), 24);
    engine.shutdown();
}

#[test]
fn requests_that_cannot_run_are_refused_with_the_reason() {
    let model = Arc::new(model());
    let engine = Engine::start(
        model,
        EngineConfig {
            max_running: 1,
            context: 64,
            max_waiting: 2,
            prefill_tokens_per_step: 512,
        },
    );
    let base = request(0);
    let too_long = Request {
        prompt: vec![1; 64],
        ..base.clone()
    };
    assert!(engine
        .submit(too_long)
        .unwrap_err()
        .to_string()
        .contains("64 tokens"));
    // Scoring only needs room for the prompt itself.
    let mut scoring = Request {
        prompt: vec![1; 64],
        prompt_logprobs: Some(1),
        ..base.clone()
    };
    scoring.config.max_tokens = 0;
    let mut channel = engine.submit(scoring).unwrap();
    let Some(Event::Prompt(scores)) = channel.blocking_recv() else {
        panic!("no prompt scores")
    };
    assert_eq!(scores.len(), 63);
    assert!(
        matches!(channel.blocking_recv(), Some(Event::Finished(f)) if f.completion_tokens == 0)
    );
    let outside = Request {
        prompt: vec![1, 500],
        ..base.clone()
    };
    assert!(engine
        .submit(outside)
        .unwrap_err()
        .to_string()
        .contains("500"));
    let empty = Request {
        prompt: vec![],
        ..base.clone()
    };
    assert!(engine.submit(empty).is_err());
    let mut nan = base.clone();
    nan.config.sampling.temperature = f32::NAN;
    assert!(engine
        .submit(nan)
        .unwrap_err()
        .to_string()
        .contains("temperature"));
}

/// Reads a request's channel to its end: its tokens as [`Outcome`].
fn collect(channel: &mut tokio::sync::mpsc::UnboundedReceiver<Event>) -> Outcome {
    let (mut ids, mut bits, mut tops, mut stop) = (Vec::new(), Vec::new(), Vec::new(), None);
    while let Some(event) = channel.blocking_recv() {
        match event {
            Event::Token(t) => {
                ids.push(t.id);
                bits.push(t.logprob.to_bits());
                tops.push(t.top.iter().map(|p| p.0).collect());
            }
            Event::Finished(f) => stop = f.stop.map(|t| t.id),
            Event::Prompt(_) => {}
            Event::Failed(e) => panic!("failed: {e}"),
        }
    }
    (ids, bits, tops, stop)
}

/// Prompts that share blocks — a common system prompt across requests running together and
/// after one another, and the samples of one prompt submitted together (forked from the first,
/// the partly filled last block copied on write) — give exactly their solo tokens; the shared
/// positions are counted, and every block is free at the end.
#[test]
fn shared_prefixes_and_forked_samples_give_their_solo_tokens() {
    use std::sync::atomic::Ordering::SeqCst;
    let model = Arc::new(model());
    let system: Vec<u32> = (0..53).map(|t| (t * 13 + 3) % 128).collect();
    let with_system = |i: u32, seed: u64| {
        let mut r = request(i);
        r.prompt = [system.clone(), r.prompt[..r.prompt.len().min(30)].to_vec()].concat();
        r.prompt_logprobs = None;
        r.config.max_tokens = r.config.max_tokens.max(12);
        r.config.sampling.seed = seed;
        r
    };
    let engine = Engine::start(
        model.clone(),
        EngineConfig {
            max_running: 8,
            context: 2048,
            max_waiting: 64,
            prefill_tokens_per_step: 512,
        },
    );
    // A first wave: three different suffixes behind the system prompt, and four samples of one
    // prompt (two greedy, two seeded).
    let mut wave: Vec<Request> = (0..3).map(|i| with_system(i, 1)).collect();
    wave.extend((0..4).map(|k| with_system(3, k / 2)));
    wave[5].config.sampling = SamplingConfig {
        temperature: 0.8,
        seed: 9,
        ..SamplingConfig::default()
    };
    let mut channels: Vec<_> = wave
        .iter()
        .map(|r| engine.submit(r.clone()).unwrap())
        .collect();
    for (i, channel) in channels.iter_mut().enumerate() {
        assert_eq!(
            collect(channel),
            solo(&model, &wave[i]),
            "first wave, request {i}"
        );
    }
    let shared = engine.stats().prefix_cached_tokens.load(SeqCst);
    // Three forks took the whole prompt.
    let forked = wave[3].prompt.len();
    assert!(shared >= 3 * forked, "{shared} positions shared");
    // A second wave after the first ended: the system prompt's three full blocks are still
    // cached and taken, not computed.
    let late = with_system(5, 4);
    let mut channel = engine.submit(late.clone()).unwrap();
    assert_eq!(collect(&mut channel), solo(&model, &late), "second wave");
    let now = engine.stats().prefix_cached_tokens.load(SeqCst);
    assert_eq!(now - shared, 3 * herd_model::paged::BLOCK_TOKENS);
    for _ in 0..200 {
        if engine.stats().running.load(SeqCst) == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(engine.stats().kv_blocks_used.load(SeqCst), 0);
    engine.shutdown();
}

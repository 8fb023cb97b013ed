//! `herd serve` over loopback on SmolLM2-135M-Instruct Q4_1, against herd's own library calls
//! as the reference: chat replies equal `Session::generate` (what `herd generate` runs) token
//! for token, alone and among 63 concurrent requests; echoed completions' log-probabilities equal
//! `herd score`'s within 1e-4; streams carry the same text as whole answers; stop strings cut
//! the text; a client that goes away frees its sequence; bad requests get OpenAI error objects.

mod common;

use std::sync::Arc;

use common::{load, Server};
use herd_infer::{GenerateConfig, SamplingConfig, Session};
use herd_serve::ServeSettings;
use herd_tokenizer::chat::{encode_chat, Message, Role};
use serde_json::{json, Value};

const PROMPTS: [&str; 8] = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three colours.",
    "How do I boil an egg?",
    "Say hello in Spanish.",
    "What is 12 times 12?",
    "Name a famous painter and one of their works, with a sentence about why it matters.",
    "Explain rain to a child.",
];

/// Request `i` of the load: its prompt, budget and sampling.
fn chat_request(i: usize) -> Value {
    let mut body = json!({
        "model": "anything",
        "messages": [{"role": "user", "content": PROMPTS[i % 8]}],
        "max_tokens": 10 + (i % 5) * 4,
    });
    if i.is_multiple_of(2) {
        body["temperature"] = json!(0);
    } else {
        body["temperature"] = json!(0.8);
        body["top_p"] = json!(0.9);
        body["top_k"] = json!(40);
        body["seed"] = json!(i);
        body["presence_penalty"] = json!(0.3);
    }
    body
}

/// What `Session::generate` gives for request `i`: (text, completion tokens).
fn reference(loaded: &herd_infer::LoadedModel, i: usize) -> (String, usize) {
    let body = chat_request(i);
    let ids = encode_chat(
        &loaded.tokenizer,
        &[Message::new(Role::User, PROMPTS[i % 8])],
    )
    .unwrap();
    let sampling = if i.is_multiple_of(2) {
        SamplingConfig::default()
    } else {
        SamplingConfig {
            temperature: 0.8,
            top_p: 0.9,
            top_k: 40,
            seed: i as u64,
            presence_penalty: 0.3,
            ..SamplingConfig::default()
        }
    };
    let config = GenerateConfig {
        max_tokens: body["max_tokens"].as_u64().unwrap() as usize,
        sampling,
        stop_tokens: loaded.tokenizer.stop_ids().to_vec(),
        top_logprobs: 0,
    };
    let mut session = Session::new(&loaded.model, 512);
    let generation = session.generate(&ids, &config, |_| Ok(true)).unwrap();
    let tokens: Vec<u32> = generation.tokens.iter().map(|t| t.id).collect();
    (loaded.tokenizer.decode(&tokens).unwrap(), tokens.len())
}

#[test]
fn chat_replies_equal_herd_generate_alone_and_among_63_others() {
    let (Some(reference_model), Some(served)) = (load(), load()) else {
        return;
    };
    let expected: Vec<(String, usize)> = (0..64).map(|i| reference(&reference_model, i)).collect();
    let server = Arc::new(Server::start(served, 16, 512, ServeSettings::default()));
    // Alone.
    for i in [0, 1] {
        let (status, reply) = server.post("/v1/chat/completions", &chat_request(i));
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["choices"][0]["message"]["content"], expected[i].0);
        assert_eq!(reply["usage"]["completion_tokens"], expected[i].1);
        assert_eq!(reply["object"], "chat.completion");
    }
    // Among 63 others, all sent at once.
    let threads: Vec<_> = (0..64)
        .map(|i| {
            let server = server.clone();
            std::thread::spawn(move || server.post("/v1/chat/completions", &chat_request(i)))
        })
        .collect();
    for (i, thread) in threads.into_iter().enumerate() {
        let (status, reply) = thread.join().unwrap();
        assert_eq!(status, 200, "request {i}: {reply}");
        assert_eq!(
            reply["choices"][0]["message"]["content"], expected[i].0,
            "request {i}"
        );
        let finish = if expected[i].1 == chat_request(i)["max_tokens"] {
            "length"
        } else {
            "stop"
        };
        assert_eq!(reply["choices"][0]["finish_reason"], finish, "request {i}");
    }
    assert_eq!(server.metric("herd_requests_running"), 0.0);
    assert_eq!(server.metric("herd_kv_cache_blocks_used"), 0.0);
    assert!(server.metric("herd_generation_tokens_total") >= 64.0 * 10.0);
}

#[test]
fn echoed_completions_score_the_prompt_like_herd_score() {
    let (Some(reference_model), Some(served)) = (load(), load()) else {
        return;
    };
    let tokenizer = &reference_model.tokenizer;
    let texts = [
        "The capital of France is Paris, and the capital of Spain is Madrid.",
        "Question: what do bees make?\nAnswer: honey",
    ];
    let ids: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| tokenizer.encode(t, false).unwrap())
        .collect();
    let server = Server::start(served, 4, 512, ServeSettings::default());
    // lm-evaluation-harness's log-likelihood request: ids, one token, echo, top-1.
    let (status, reply) = server.post(
        "/v1/completions",
        &json!({"model": "m", "prompt": ids, "temperature": 0, "max_tokens": 1,
                "logprobs": 1, "seed": 1234, "echo": true}),
    );
    assert_eq!(status, 200, "{reply}");
    for (i, prompt) in ids.iter().enumerate() {
        let choice = &reply["choices"][i];
        assert_eq!(choice["index"], i);
        let logprobs = &choice["logprobs"];
        let token_logprobs = logprobs["token_logprobs"].as_array().unwrap();
        assert_eq!(token_logprobs.len(), prompt.len() + 1);
        assert!(token_logprobs[0].is_null());
        let expected = herd_infer::score::score(&reference_model.model, prompt, 1).unwrap();
        for (score, (got, top)) in expected.iter().zip(
            token_logprobs[1..]
                .iter()
                .zip(&logprobs["top_logprobs"].as_array().unwrap()[1..]),
        ) {
            let got = got.as_f64().unwrap();
            assert!(
                (got - f64::from(score.logprob)).abs() < 1e-4,
                "{got} vs {score:?}"
            );
            // lm-eval's greediness test: the token's value equals the best alternative's.
            let best = top
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_f64().unwrap())
                .fold(f64::MIN, f64::max);
            assert_eq!(got == best, score.is_greedy, "position {}", score.position);
        }
        let text = choice["text"].as_str().unwrap();
        assert!(text.starts_with(texts[i]), "{text}");
        let offsets = logprobs["text_offset"].as_array().unwrap();
        assert_eq!(offsets[0], 0);
        assert_eq!(
            logprobs["tokens"].as_array().unwrap().len(),
            prompt.len() + 1
        );
    }
    // A budget of 0 scores only; text prompts work alike.
    let (status, reply) = server.post(
        "/v1/completions",
        &json!({"prompt": [texts[0]], "max_tokens": 0, "logprobs": 0, "echo": true}),
    );
    assert_eq!(status, 200, "{reply}");
    let lp = reply["choices"][0]["logprobs"]["token_logprobs"]
        .as_array()
        .unwrap();
    assert_eq!(lp.len(), ids[0].len());
    assert_eq!(reply["choices"][0]["text"], texts[0]);
    assert_eq!(reply["usage"]["completion_tokens"], 0);
}

#[test]
fn streams_carry_the_same_text_as_whole_answers() {
    let Some(served) = load() else {
        return;
    };
    let server = Server::start(served, 4, 512, ServeSettings::default());
    let mut body = chat_request(3);
    body["n"] = json!(2);
    let (_, whole) = server.post("/v1/chat/completions", &body);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let events = server.stream("/v1/chat/completions", &body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    for i in 0..2 {
        let text: String = chunks
            .iter()
            .flat_map(|c| c["choices"].as_array().unwrap().iter())
            .filter(|c| c["index"] == i)
            .filter_map(|c| c["delta"]["content"].as_str())
            .collect();
        assert_eq!(
            text, whole["choices"][i]["message"]["content"],
            "choice {i}"
        );
    }
    let usage = &chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], whole["usage"]);
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    // Completions stream too.
    let body = json!({"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0});
    let (_, whole) = server.post("/v1/completions", &body);
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let events = server.stream("/v1/completions", &streamed);
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, whole["choices"][0]["text"]);
}

#[test]
fn stop_strings_cut_the_text_and_departed_clients_free_their_sequences() {
    let Some(served) = load() else {
        return;
    };
    let server = Server::start(served, 4, 512, ServeSettings::default());
    let body = json!({"prompt": "The first ten numbers are one, two, three,", "max_tokens": 24,
                      "temperature": 0});
    let (_, whole) = server.post("/v1/completions", &body);
    let text = whole["choices"][0]["text"].as_str().unwrap().to_string();
    let cut = text.char_indices().nth(text.chars().count() / 2).unwrap().0;
    let stop = text[cut..].chars().take(3).collect::<String>();
    let start = text.find(&stop).unwrap();
    let mut stopped = body.clone();
    stopped["stop"] = json!([stop, "never appears"]);
    let (_, reply) = server.post("/v1/completions", &stopped);
    assert_eq!(reply["choices"][0]["text"], text[..start]);
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");
    // A client that reads one chunk of a long stream and leaves.
    {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(server.address).unwrap();
        let body = json!({"prompt": "Tell me a long story.", "max_tokens": 400, "stream": true})
            .to_string();
        write!(
            stream,
            "POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut first = [0u8; 64];
        stream.read_exact(&mut first).unwrap();
    }
    let mut freed = false;
    for _ in 0..500 {
        if server.metric("herd_requests_running") == 0.0 {
            freed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(freed, "the departed client's sequence still runs");
    assert!(server.metric("herd_generation_tokens_total") < 400.0 + 2.0 * 24.0);
}

#[test]
fn bad_requests_get_openai_error_objects_and_the_server_goes_on() {
    let Some(served) = load() else {
        return;
    };
    let server = Server::start(served, 2, 256, ServeSettings::default());
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases: Vec<(&str, Value, u16, Option<&str>)> = vec![
        (
            "/v1/chat/completions",
            json!({"messages": []}),
            400,
            Some("messages"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": "hi"}),
            400,
            Some("messages"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": user, "max_tokens": -5}),
            400,
            Some("max_tokens"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": user, "max_tokens": 100000}),
            400,
            Some("max_tokens"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": user, "temperature": "hot"}),
            400,
            Some("temperature"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": user, "top_p": 0}),
            400,
            Some("top_p"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": user, "n": 0}),
            400,
            Some("n"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": user, "logit_bias": {"5": 10}}),
            400,
            Some("logit_bias"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": user, "response_format": {"type": "json_object"}}),
            400,
            Some("response_format"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "robot", "content": "x"}]}),
            400,
            Some("messages[0].role"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
            400,
            Some("messages[0].content[0]"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": user, "tool_choice": "required"}),
            400,
            Some("tool_choice"),
        ),
        (
            "/v1/completions",
            json!({"prompt": [1, 2, 99999999]}),
            400,
            None,
        ),
        (
            "/v1/completions",
            json!({"prompt": [1, -2]}),
            400,
            Some("prompt[1]"),
        ),
        (
            "/v1/completions",
            json!({"prompt": []}),
            400,
            Some("prompt"),
        ),
        ("/v1/completions", json!({"prompt": 5}), 400, Some("prompt")),
        (
            "/v1/completions",
            json!({"prompt": "x", "suffix": "y"}),
            400,
            Some("suffix"),
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "logprobs": 50}),
            400,
            Some("logprobs"),
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "max_tokens": 300}),
            400,
            Some("max_tokens"),
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "stop": [""]}),
            400,
            Some("stop"),
        ),
        (
            "/detokenize",
            json!({"tokens": [99999999]}),
            400,
            Some("tokens"),
        ),
        ("/tokenize", json!({}), 400, Some("prompt")),
    ];
    for (path, body, status, param) in cases {
        let (got, reply) = server.post(path, &body);
        assert_eq!(got, status, "{path} {body}: {reply}");
        let error = &reply["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{reply}"
        );
        assert_eq!(error["type"], "invalid_request_error");
        if let Some(param) = param {
            assert_eq!(error["param"], param, "{path} {body}: {reply}");
        }
    }
    for raw in [&b"{not json"[..], b"", b"[1,2]", b"\xff\xfe"] {
        let response = server.raw("/v1/chat/completions", Some(raw), &[]);
        assert_eq!(response.status, 400);
        let reply: Value = serde_json::from_str(&response.body).unwrap();
        assert!(reply["error"]["message"].is_string());
    }
    assert_eq!(server.request("/nowhere", None).0, 404);
    assert_eq!(server.request("/v1/chat/completions", None).0, 405);
    let (status, reply) = server.post(
        "/v1/chat/completions",
        &json!({"messages": user, "max_tokens": 3, "unknown_field": {"is": "ignored"}}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(server.metric("herd_requests_running"), 0.0);
}

#[test]
fn an_api_key_is_required_when_set() {
    let Some(served) = load() else {
        return;
    };
    let settings = ServeSettings {
        api_key: Some("sesame".into()),
        ..ServeSettings::default()
    };
    let server = Server::start(served, 1, 256, settings);
    let body = br#"{"prompt": "x", "max_tokens": 1}"#;
    let refused = server.raw("/v1/completions", Some(body), &[]);
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("authentication_error"));
    let wrong = server.raw(
        "/v1/completions",
        Some(body),
        &[("Authorization", "Bearer open")],
    );
    assert_eq!(wrong.status, 401);
    let right = server.raw(
        "/v1/completions",
        Some(body),
        &[("Authorization", "Bearer sesame")],
    );
    assert_eq!(right.status, 200, "{}", right.body);
    assert_eq!(server.request("/health", None).0, 200);
}

#[test]
fn tools_and_tool_results_reach_the_template_as_transformers_passes_them() {
    let (Some(reference), Some(served), Some(template)) = (
        load(),
        load(),
        herd_util::testing::asset("llama.cpp/meta-llama-Llama-3.1-8B-Instruct.jinja"),
    ) else {
        return;
    };
    let fixture: Value = serde_json::from_str(include_str!(
        "../../herd-tokenizer/tests/fixtures/llama3_1_template.json"
    ))
    .unwrap();
    let case = fixture["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "tool_round_trip")
        .unwrap();
    let settings = ServeSettings {
        chat_template: Some(std::fs::read_to_string(template).unwrap()),
        ..ServeSettings::default()
    };
    let server = Server::start(served, 1, 1024, settings);
    // As an OpenAI client sends it: the call's arguments as a JSON string.
    let mut messages = case["messages"].clone();
    let arguments = &mut messages[2]["tool_calls"][0]["function"]["arguments"];
    *arguments = json!(arguments.to_string());
    let (status, reply) = server.post(
        "/tokenize",
        &json!({"messages": messages, "tools": case["tools"]}),
    );
    assert_eq!(status, 200, "{reply}");
    // The template's `bos_token` is the model's own.
    let tokenizer = &reference.tokenizer;
    let text = case["text"].as_str().unwrap().replace(
        "<|begin_of_text|>",
        &tokenizer.token_text(tokenizer.bos_id()),
    );
    let expected = tokenizer.encode(&text, true).unwrap();
    assert_eq!(reply["tokens"], json!(expected));
    // A chat request with the same messages reads the same prompt.
    let (status, reply) = server.post(
        "/v1/chat/completions",
        &json!({"messages": messages, "tools": case["tools"], "max_tokens": 1}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["usage"]["prompt_tokens"], expected.len());
}

/// A Llama 3 model with Meta's tokenizer and no chat template (herd's own models) told about
/// tools: the server writes the prompt Llama 3.1 Instruct's template writes (the fixture's
/// jinja2 renderings), token for token.
#[test]
fn a_model_without_a_template_gets_llama_3_1s_tool_prompt() {
    let Some(tokenizer_path) = herd_util::testing::asset("llama3/tokenizer.model") else {
        return;
    };
    let tokenizer = herd_tokenizer::Tokenizer::from_path(&tokenizer_path).unwrap();
    let served_tokenizer = herd_tokenizer::Tokenizer::from_path(&tokenizer_path).unwrap();
    let config = herd_model::LlamaConfig {
        vocab_size: 128_256,
        max_seq_len: 1024,
        ..herd_model::seeded_weights::tiny_config()
    };
    let weights = herd_model::seeded_weights::weights(&config, &candle_core::Device::Cpu).unwrap();
    let model = herd_model::Llama::load(
        config,
        &weights,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let served = herd_infer::LoadedModel {
        model,
        tokenizer: served_tokenizer,
        format: herd_model::checkpoint::Format::Hf,
    };
    let server = Server::start(served, 1, 1024, ServeSettings::default());
    let fixture: Value = serde_json::from_str(include_str!(
        "../../herd-tokenizer/tests/fixtures/llama3_1_template.json"
    ))
    .unwrap();
    let mut checked = 0;
    for case in fixture["cases"].as_array().unwrap() {
        if case["tools"].is_null() || case["add_generation_prompt"] == false {
            continue;
        }
        // As an OpenAI client sends them: call arguments as JSON strings.
        let mut messages = case["messages"].clone();
        for message in messages.as_array_mut().unwrap() {
            let calls = message.get_mut("tool_calls").and_then(Value::as_array_mut);
            for call in calls.into_iter().flatten() {
                let arguments = &mut call["function"]["arguments"];
                *arguments = json!(arguments.to_string());
            }
        }
        let (status, reply) = server.post(
            "/tokenize",
            &json!({"messages": messages, "tools": case["tools"]}),
        );
        assert_eq!(status, 200, "{reply}");
        let expected = tokenizer
            .encode(case["text"].as_str().unwrap(), true)
            .unwrap();
        assert_eq!(reply["tokens"], json!(expected), "case {}", case["name"]);
        checked += 1;
    }
    assert_eq!(checked, 3);
}

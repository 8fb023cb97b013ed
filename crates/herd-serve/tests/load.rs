//! A bounded loopback load test: 64 client streams send 512 streamed chat requests of mixed
//! lengths — a third with one of two shared system prompts, greedy and seeded sampling, budgets
//! of 4 to 28 tokens — and one request in eight is abandoned after its third chunk. No request
//! is lost, every finished reply equals its solo reference (`Session::generate`, what
//! `herd generate` runs) token for token, and at the end nothing runs and no KV slot is held.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;

use common::{load, Server};
use herd_infer::{GenerateConfig, SamplingConfig, Session};
use herd_serve::ServeSettings;
use herd_tokenizer::chat::{encode_chat, Message, Role};
use serde_json::{json, Value};

const SYSTEMS: [&str; 2] = [
    "You are a concise assistant. Answer in one or two sentences and never use lists.",
    "You are a pirate. Answer every question as a pirate would, with plenty of arrr.",
];

const QUESTIONS: [&str; 8] = [
    "Why is the sky blue?",
    "Name three rivers.",
    "What is the tallest mountain on Earth and how tall is it?",
    "Hi!",
    "Translate 'good morning' into French.",
    "Give me a word that rhymes with cat.",
    "How many legs does a spider have, and why do they need so many of them to walk?",
    "What is 7 plus 8?",
];

/// The 32 distinct requests the load repeats: (system, question, budget, seed or greedy).
fn spec(i: usize) -> (Option<&'static str>, &'static str, usize, Option<u64>) {
    let kind = i % 32;
    let system = match kind % 3 {
        0 => Some(SYSTEMS[kind % 2]),
        _ => None,
    };
    let seed = (kind % 4 == 1).then_some(kind as u64);
    (system, QUESTIONS[kind % 8], 4 + (kind % 7) * 4, seed)
}

fn body(i: usize) -> Value {
    let (system, question, budget, seed) = spec(i);
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.push(json!({"role": "user", "content": question}));
    let mut body = json!({"messages": messages, "max_tokens": budget, "stream": true,
                          "temperature": 0});
    if let Some(seed) = seed {
        body["temperature"] = json!(0.9);
        body["top_k"] = json!(50);
        body["seed"] = json!(seed);
    }
    body
}

fn solo(loaded: &herd_infer::LoadedModel, kind: usize) -> String {
    let (system, question, budget, seed) = spec(kind);
    let mut messages: Vec<Message> = system
        .map(|s| Message::new(Role::System, s))
        .into_iter()
        .collect();
    messages.push(Message::new(Role::User, question));
    let ids = encode_chat(&loaded.tokenizer, &messages).unwrap();
    let sampling = match seed {
        Some(seed) => SamplingConfig {
            temperature: 0.9,
            top_k: 50,
            seed,
            ..SamplingConfig::default()
        },
        None => SamplingConfig::default(),
    };
    let config = GenerateConfig {
        max_tokens: budget,
        sampling,
        stop_tokens: loaded.tokenizer.stop_ids().to_vec(),
        top_logprobs: 0,
    };
    let generation = Session::new(&loaded.model, 512)
        .generate(&ids, &config, |_| Ok(true))
        .unwrap();
    let tokens: Vec<u32> = generation.tokens.iter().map(|t| t.id).collect();
    loaded.tokenizer.decode(&tokens).unwrap()
}

/// Streams request `i`; an abandoning client reads three chunks and closes the connection.
/// Returns the reply's text when the stream was read to its end.
fn stream(server: &Server, i: usize, abandon: bool) -> Option<String> {
    if !abandon {
        let (status, text) = server.request("/v1/chat/completions", Some(&body(i).to_string()));
        assert_eq!(status, 200, "request {i}: {text}");
        let data: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        assert_eq!(data.last(), Some(&"[DONE]"), "request {i}");
        let reply: String = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str::<Value>(d).unwrap())
            .filter_map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        return Some(reply);
    }
    let mut connection = std::net::TcpStream::connect(server.address).unwrap();
    let payload = body(i).to_string();
    write!(
        connection,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{payload}",
        payload.len()
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 256];
    while seen.windows(6).filter(|w| w == b"data: ").count() < 3 {
        match connection.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
        }
    }
    None
}

#[test]
fn five_hundred_requests_from_64_streams_lose_nothing_and_match_their_solo_runs() {
    let (Some(reference), Some(served)) = (load(), load()) else {
        return;
    };
    let expected: Vec<String> = (0..32).map(|kind| solo(&reference, kind)).collect();
    let server = Arc::new(Server::start(served, 16, 512, ServeSettings::default()));
    let clients: Vec<_> = (0..64)
        .map(|client| {
            let server = server.clone();
            std::thread::spawn(move || {
                (0..8)
                    .map(|k| {
                        let i = client * 8 + k;
                        (i, stream(&server, i, i % 8 == 5))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut finished = 0;
    let mut abandoned = 0;
    for client in clients {
        for (i, reply) in client.join().unwrap() {
            match reply {
                Some(text) => {
                    assert_eq!(text, expected[i % 32], "request {i}");
                    finished += 1;
                }
                None => abandoned += 1,
            }
        }
    }
    assert_eq!((finished, abandoned), (448, 64));
    // Abandoned sequences end at their next token; then nothing is held.
    let mut idle = false;
    for _ in 0..500 {
        if server.metric("herd_requests_running") == 0.0
            && server.metric("herd_kv_cache_blocks_used") == 0.0
        {
            idle = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(idle, "sequences or KV blocks are still held after the load");
    assert_eq!(server.metric("herd_requests_waiting"), 0.0);
    // Repeated prompts and shared system prompts were read from shared blocks, not recomputed.
    assert!(server.metric("herd_prefix_cached_tokens") > 0.0);
}

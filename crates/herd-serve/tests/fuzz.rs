//! Mutated request bodies against a running server: every answer is a complete HTTP response —
//! an OpenAI error object (4xx) or a normal reply (a JSON body or an event stream) — never a
//! 5xx or a dropped connection, and the server still answers a good request at the end.
//! `HERD_FUZZ_CASES=N` sends N per endpoint (see docs/FUZZING.md).

mod common;

use std::path::Path;

use common::{load, Server};
use herd_serve::ServeSettings;
use herd_util::fuzz;
use serde_json::{json, Value};

fn seeds(bodies: &[Value]) -> Vec<Vec<u8>> {
    bodies.iter().map(|b| b.to_string().into_bytes()).collect()
}

fn check(server: &Server, path: &str, input: &[u8]) {
    let response = server.raw(path, Some(input), &[]);
    let streamed = response
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/event-stream"));
    assert!(
        response.status < 500 || response.status == 503,
        "{path} answered {} to {:?}: {}",
        response.status,
        String::from_utf8_lossy(input),
        response.body
    );
    if streamed {
        assert!(response.body.contains("data: [DONE]"), "{}", response.body);
        return;
    }
    let reply: Value = serde_json::from_str(&response.body).unwrap_or_else(|e| {
        panic!(
            "{path}: not JSON ({e}) for {:?}",
            String::from_utf8_lossy(input)
        )
    });
    if response.status >= 400 {
        let error = &reply["error"];
        assert!(
            error["message"].is_string() && error["type"].is_string(),
            "{reply}"
        );
    }
}

#[test]
fn mutated_requests_get_answers_and_the_server_goes_on() {
    let Some(served) = load() else {
        return;
    };
    // A small context bounds what a mutated but valid request can generate.
    let server = Server::start(served, 8, 96, ServeSettings::default());
    let chat = seeds(&[
        json!({"messages": [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "Hi there"}],
               "max_tokens": 4, "temperature": 0.7, "top_p": 0.9, "seed": 3, "n": 2,
               "stop": ["\n"], "logprobs": true, "top_logprobs": 2}),
        json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                            {"role": "assistant", "content": null,
                             "tool_calls": [{"id": "c1", "type": "function",
                                             "function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
                            {"role": "tool", "tool_call_id": "c1", "content": "2"}],
               "max_tokens": 3, "stream": true, "stream_options": {"include_usage": true}}),
    ]);
    let completions = seeds(&[
        json!({"prompt": [[1, 2, 3], [4, 5]], "max_tokens": 1, "echo": true, "logprobs": 1,
               "temperature": 0}),
        json!({"prompt": ["Once", "Twice"], "max_tokens": 3, "stop": "e", "n": 2,
               "frequency_penalty": 0.5}),
    ]);
    let tokenize = seeds(&[
        json!({"prompt": "<|im_end|> hello", "add_special_tokens": false}),
        json!({"tokens": [1, 2, 300]}),
    ]);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    fuzz::run("serve-chat", &chat, &dir.join("chat"), 150, |input| {
        check(&server, "/v1/chat/completions", input)
    });
    fuzz::run(
        "serve-completions",
        &completions,
        &dir.join("completions"),
        150,
        |input| check(&server, "/v1/completions", input),
    );
    fuzz::run(
        "serve-tokenize",
        &tokenize,
        &dir.join("tokenize"),
        100,
        |input| {
            check(&server, "/tokenize", input);
            check(&server, "/detokenize", input);
        },
    );
    let (status, reply) = server.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(server.metric("herd_requests_running"), 0.0);
}

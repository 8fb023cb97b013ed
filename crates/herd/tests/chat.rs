//! `herd chat` as a person uses it: Ctrl-C (SIGINT) stops a reply and the session goes on with
//! the next line; end of input ends it cleanly, also after a last line without a newline. The
//! model is a small random one with a byte-level vocabulary that has no stop token, so a reply
//! runs until it is stopped — the test cannot pass by a reply ending on its own.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use herd_model::checkpoint::hf;
use herd_model::{seeded_weights, LlamaConfig};

/// GPT-2's byte-to-character table (printable bytes stand for themselves).
fn byte_chars() -> Vec<char> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0;
    (0..256u32)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap()
            } else {
                extra += 1;
                char::from_u32(255 + extra).unwrap()
            }
        })
        .collect()
}

/// A 256-id byte-level model folder with a plain chat template and no stop token.
fn write_model(dir: &Path) {
    let vocab: serde_json::Map<String, serde_json::Value> = byte_chars()
        .into_iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), serde_json::json!(i)))
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": []},
    });
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}\
                    {% if add_generation_prompt %}assistant: {% endif %}";
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::json!({"chat_template": template, "add_bos_token": false}).to_string(),
    )
    .unwrap();
    let config = LlamaConfig {
        vocab_size: 256,
        max_seq_len: 100_000,
        tie_embeddings: true,
        ..herd_model::seeded_weights::tiny_config()
    };
    let weights = seeded_weights::weights(&config, &Device::Cpu).unwrap();
    hf::save(dir, &config, &weights, DType::F32, usize::MAX).unwrap();
}

fn chat(model: &Path, max_tokens: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_herd"))
        .args([
            "chat",
            "--model",
            &model.display().to_string(),
            "--temperature",
            "1",
        ])
        .args(["-n", max_tokens, "--context", "100000"])
        .env("HOME", model) // the line history goes to the temporary folder
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The child's stream read on a thread, chunk by chunk.
fn reader(mut stream: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    rx
}

/// Collects what `rx` sends until `done` says so (or a minute passes).
fn read_until(rx: &mpsc::Receiver<Vec<u8>>, got: &mut Vec<u8>, done: impl Fn(&[u8]) -> bool) {
    let started = Instant::now();
    while !done(got) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "waited a minute: {:?}",
            String::from_utf8_lossy(got)
        );
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(100)) {
            got.extend(chunk);
        }
    }
}

#[test]
fn ctrl_c_stops_a_reply_and_the_session_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path());
    let mut child = chat(dir.path(), "90000");
    let mut stdin = child.stdin.take().unwrap();
    let out = reader(child.stdout.take().unwrap());
    let err = reader(child.stderr.take().unwrap());
    stdin.write_all(b"tell me a long story\n").unwrap();
    // The reply is being written (it would take minutes to reach 90,000 tokens).
    let mut written = Vec::new();
    read_until(&out, &mut written, |o| o.len() > 200);
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut messages = Vec::new();
    read_until(&err, &mut messages, |e| {
        String::from_utf8_lossy(e).contains("stopped]")
    });
    // The session reads on: the next line is taken, and the end of input ends it cleanly.
    stdin.write_all(b"/reset\n").unwrap();
    read_until(&err, &mut messages, |e| {
        String::from_utf8_lossy(e).contains("(conversation cleared)")
    });
    drop(stdin);
    let exit = child.wait().unwrap();
    assert!(
        exit.success(),
        "{exit:?}: {}",
        String::from_utf8_lossy(&messages)
    );
    let text = String::from_utf8_lossy(&messages);
    let tokens: usize = text
        .split("[")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(tokens < 90_000, "{text}");
}

#[test]
fn a_last_line_without_newline_is_answered_then_the_session_ends() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path());
    let mut child = chat(dir.path(), "5");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello").unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{err}");
    assert!(err.contains("[5 tokens"), "{err}");
}

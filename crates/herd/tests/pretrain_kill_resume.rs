//! `herd pretrain` killed with SIGKILL mid-run and started again with `--resume` ends with the
//! same weights and the same loss curve as a run never interrupted (the exact-resume
//! criterion, through the binary, on real text).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn herd(args: &[&str]) {
    let status = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "herd {args:?} failed");
}

/// Alice in Wonderland cut into ~1,500-character JSONL documents.
fn write_corpus(dir: &Path) -> Option<PathBuf> {
    let book = herd_util::testing::shared("data/books/gutenberg/carroll-alice.txt.gz")?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(book).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let chars: Vec<char> = text.chars().collect();
    let lines: String = chars
        .chunks(1_500)
        .map(|c| serde_json::json!({ "text": c.iter().collect::<String>() }).to_string() + "\n")
        .collect();
    let path = dir.join("alice.jsonl");
    std::fs::write(&path, lines).unwrap();
    Some(path)
}

/// herd-train's test recipe (`crates/herd-train/tests/fixtures/recipe.toml.in`), 40 steps of
/// which the last 10 anneal, checkpoints every 4 steps.
fn recipe(dir: &Path) -> PathBuf {
    let template = include_str!("../../herd-train/tests/fixtures/recipe.toml.in");
    let text = template
        .replace("{root}", &dir.display().to_string())
        .replace("{total}", "40")
        .replace("{half}", "20")
        .replace("{anneal}", "10");
    let path = dir.join("recipe.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn losses(out: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{} {} {}", v["step"], v["loss"], v["val_loss"])
        })
        .collect()
}

#[test]
fn killed_and_resumed_run_matches_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let Some(corpus) = write_corpus(dir.path()) else {
        return;
    };
    let root = dir.path();
    let s = |p: &Path| p.display().to_string();
    let tokenizer = root.join("tokenizer.model");
    herd(&[
        "tokenizer",
        "train",
        "--input",
        &s(&corpus),
        "--vocab-size",
        "512",
        "--out",
        &s(&tokenizer),
    ]);
    herd(&[
        "data",
        "tokenize",
        "--tokenizer",
        &s(&tokenizer),
        "--input",
        &s(&corpus),
        "--out",
        &s(&root.join("shards")),
    ]);
    let recipe = s(&recipe(root));
    let straight = root.join("straight");
    herd(&[
        "pretrain",
        "--recipe",
        &recipe,
        "--out",
        &s(&straight),
        "--quiet",
    ]);

    let killed = root.join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args([
            "pretrain",
            "--recipe",
            &recipe,
            "--out",
            &s(&killed),
            "--quiet",
        ])
        .spawn()
        .unwrap();
    // Kill it once it has passed its third checkpoint, wherever it is then.
    let started = Instant::now();
    while !killed.join("checkpoints/step-00000012").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!killed.join("final").exists());
    herd(&[
        "pretrain",
        "--recipe",
        &recipe,
        "--out",
        &s(&killed),
        "--resume",
        "--quiet",
    ]);

    let weights = |out: &Path| std::fs::read(out.join("final/model.safetensors")).unwrap();
    assert!(
        weights(&straight) == weights(&killed),
        "final weights differ"
    );
    assert_eq!(losses(&straight).len(), 40);
    assert_eq!(losses(&straight), losses(&killed));
}

//! What the binary's end-to-end tests share: running `herd`, and a small pretraining run on
//! real text.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Runs `herd` with `args` and asserts that it succeeds.
pub fn herd(args: &[&str]) {
    let status = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "herd {args:?} failed");
}

/// Alice in Wonderland in `../shared`, the text the helpers below train on (a test that calls
/// them can ask `herd_util::testing::shared` for it first, to skip in one place).
pub const ALICE_BOOK: &str = "data/books/gutenberg/carroll-alice.txt.gz";

/// Alice in Wonderland cut into ~1,500-character JSONL documents.
pub fn write_corpus(dir: &Path) -> Option<PathBuf> {
    let book = herd_util::testing::shared(ALICE_BOOK)?;
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

/// herd-train's test recipe (`crates/herd-train/tests/fixtures/recipe.toml.in`), `total`
/// steps of which the last quarter anneal, checkpoints every 4 steps.
pub fn recipe(dir: &Path, total: usize) -> PathBuf {
    let template = include_str!("../../../herd-train/tests/fixtures/recipe.toml.in");
    let text = template
        .replace("{root}", &dir.display().to_string())
        .replace("{total}", &total.to_string())
        .replace("{half}", &(total / 2).to_string())
        .replace("{anneal}", &(total / 4).to_string());
    let path = dir.join("recipe.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Alice in Wonderland as a corpus (`alice.jsonl`), a 768-id vocabulary herd trains on it
/// (`tokenizer.model`) and its token shards (`shards/`), all in `root`, through the binary;
/// None (skipped) without ../shared.
pub fn alice_shards(root: &Path) -> Option<()> {
    let corpus = write_corpus(root)?;
    let s = |p: &Path| p.display().to_string();
    let tokenizer = root.join("tokenizer.model");
    herd(&[
        "tokenizer",
        "train",
        "--input",
        &s(&corpus),
        "--vocab-size",
        "768",
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
    Some(())
}

/// Pretrains the test recipe's model ([`recipe`], `total` steps, a context of `max_seq_len`)
/// on [`alice_shards`] in `root`; returns the final model folder.
pub fn pretrain_on_alice(root: &Path, total: usize, max_seq_len: usize) -> Option<PathBuf> {
    alice_shards(root)?;
    let recipe = recipe(root, total);
    let text = std::fs::read_to_string(&recipe)
        .unwrap()
        .replace("max_seq_len = 64", &format!("max_seq_len = {max_seq_len}"));
    std::fs::write(&recipe, text).unwrap();
    let out = root.join("run");
    let s = |p: &Path| p.display().to_string();
    herd(&[
        "pretrain",
        "--recipe",
        &s(&recipe),
        "--out",
        &s(&out),
        "--quiet",
    ]);
    Some(out.join("final"))
}

/// Waits until `path` exists while `child` (the run that will write it) keeps running; fails
/// after 5 minutes or if the child ends first.
pub fn wait_while_running_for(path: &Path, child: &mut Child) {
    let started = Instant::now();
    while !path.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{} did not appear",
            path.display()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before {} appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

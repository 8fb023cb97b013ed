//! End-to-end pretraining on real text (Gutenberg books from `../shared/data`, with a
//! vocabulary trained on them): exact resume, and a validation loss well below the unigram
//! entropy of the data.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use herd_data::tokenize::{tokenize_files, TokenizeOptions};
use herd_tokenizer::train::{ranks_file_text, train_ranks};
use herd_tokenizer::Tokenizer;
use herd_train::{metrics, pretrain, Recipe, RunOptions};

/// Texts of two books cut into ~2,000-character documents (the last 40 of them first, so the
/// validation split sees both books).
fn book_documents() -> Option<Vec<String>> {
    let dir = herd_util::testing::shared("data/books/gutenberg")?;
    let mut docs = Vec::new();
    for book in ["carroll-alice.txt.gz", "austen-persuasion.txt.gz"] {
        let mut text = String::new();
        let file = std::fs::File::open(dir.join(book)).unwrap();
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .unwrap();
        let text: String = text.chars().take(150_000).collect();
        let mut current = String::new();
        for paragraph in text.split("\n\n") {
            current.push_str(paragraph);
            current.push_str("\n\n");
            if current.len() > 2_000 {
                docs.push(std::mem::take(&mut current));
            }
        }
    }
    Some(docs)
}

struct Corpus {
    _dir: tempfile::TempDir,
    root: PathBuf,
    unigram_entropy: f64,
}

/// Tokenizer (768 ids) and shards under a temporary folder.
fn corpus() -> Option<Corpus> {
    let docs = book_documents()?;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let ranks = train_ranks(docs.iter(), 768, 2).unwrap();
    std::fs::write(root.join("tokenizer.model"), ranks_file_text(&ranks)).unwrap();
    let jsonl: String = docs
        .iter()
        .map(|d| serde_json::json!({ "text": d }).to_string() + "\n")
        .collect();
    std::fs::write(root.join("books.jsonl"), jsonl).unwrap();
    let tokenizer = Tokenizer::llama3(&root.join("tokenizer.model")).unwrap();
    let options = TokenizeOptions {
        field: "text",
        shard_tokens: 40_000,
        split_chars: None,
        progress: &|_, _, _| {},
    };
    let files = [root.join("books.jsonl")];
    let summary = tokenize_files(&files, &tokenizer, &root.join("shards"), &options).unwrap();
    assert!(summary.shards.len() >= 2 && summary.bad.is_empty());
    // Unigram entropy (nats) of the tokens.
    let mut counts: HashMap<u32, f64> = HashMap::new();
    for shard in &summary.shards {
        let shard = herd_data::Shard::open(shard).unwrap();
        for d in 0..shard.n_docs() {
            for t in shard.document(d) {
                *counts.entry(t).or_default() += 1.0;
            }
        }
    }
    let n: f64 = counts.values().sum();
    let unigram_entropy = -counts.values().map(|c| c / n * (c / n).ln()).sum::<f64>();
    Some(Corpus {
        _dir: dir,
        root,
        unigram_entropy,
    })
}

/// The test recipe (`tests/fixtures/recipe.toml.in`) for a corpus under `root`.
fn recipe_text(root: &Path, total: u64, anneal: u64) -> String {
    let template = include_str!("fixtures/recipe.toml.in");
    template
        .replace("{root}", &root.display().to_string())
        .replace("{total}", &total.to_string())
        .replace("{half}", &(total / 2).to_string())
        .replace("{anneal}", &anneal.to_string())
}

fn recipe(corpus: &Corpus, total: u64, anneal: u64) -> Recipe {
    let text = recipe_text(&corpus.root, total, anneal);
    Recipe::parse(&text, Path::new("test.toml")).unwrap()
}

fn run(
    recipe: &Recipe,
    out: &Path,
    max_steps: Option<u64>,
    resume: bool,
) -> herd_train::RunSummary {
    let options = RunOptions {
        out: out.to_path_buf(),
        max_steps,
        resume,
        overwrite: false,
        progress: false,
    };
    pretrain(recipe, &options).unwrap()
}

#[test]
fn stopped_and_resumed_run_is_bit_identical() {
    let Some(corpus) = corpus() else { return };
    let recipe = recipe(&corpus, 14, 6);
    let straight = corpus.root.join("straight");
    run(&recipe, &straight, None, false);
    let split = corpus.root.join("split");
    let first = run(&recipe, &split, Some(7), false);
    assert_eq!(first.steps, 7);
    assert!(first.final_model.is_none());
    // Without --resume an existing run is not overwritten.
    let again = pretrain(
        &recipe,
        &RunOptions {
            out: split.clone(),
            max_steps: None,
            resume: false,
            overwrite: false,
            progress: false,
        },
    );
    assert!(again.unwrap_err().to_string().contains("--resume"));
    let resumed = run(&recipe, &split, None, true);
    assert_eq!(resumed.steps, 14);
    let bytes = |root: &Path| std::fs::read(root.join("final/model.safetensors")).unwrap();
    assert!(bytes(&straight) == bytes(&split), "final weights differ");
    let losses = |root: &Path| -> Vec<(u64, u64, Option<u64>)> {
        metrics::read(&root.join("metrics.jsonl"))
            .unwrap()
            .iter()
            .map(|m| (m.step, m.loss.to_bits(), m.val_loss.map(f64::to_bits)))
            .collect()
    };
    assert_eq!(losses(&straight).len(), 14);
    assert_eq!(losses(&straight), losses(&split));
    // The final model is the average of the last two annealing checkpoints (steps 12 and 14).
    let anneal: Vec<_> = std::fs::read_dir(straight.join("anneal"))
        .unwrap()
        .collect();
    assert_eq!(anneal.len(), 3);
    assert!(straight.join("final/tokenizer.model").exists());
    // The folder also carries the tokenizer in HF's form, with the same ids.
    let tiktoken = Tokenizer::from_path(&straight.join("final")).unwrap();
    let hf = Tokenizer::from_path(&straight.join("final/tokenizer.json")).unwrap();
    assert!(straight.join("final/tokenizer_config.json").exists());
    let text = "It is a truth universally acknowledged, that a single man — 1,234 times!\n\n";
    assert_eq!(
        hf.encode_prompt(text, true).unwrap(),
        tiktoken.encode_prompt(text, true).unwrap()
    );
    assert_eq!(
        herd_train::checkpoint::list_steps(&straight.join("checkpoints")).unwrap(),
        vec![12, 14]
    );
}

/// `--resume` continues only the run a checkpoint was made by: other shards (once an index out
/// of bounds in the loader, or a silent switch of data) or another recipe are refused with the
/// reason, and `--overwrite` starts again.
#[test]
fn resume_refuses_other_data_and_other_recipes() {
    let Some(corpus) = corpus() else { return };
    let recipe = recipe(&corpus, 10, 2);
    let out = corpus.root.join("run");
    run(&recipe, &out, Some(3), false);
    let resume = |recipe: &Recipe| {
        let options = RunOptions {
            out: out.clone(),
            max_steps: Some(4),
            resume: true,
            overwrite: false,
            progress: false,
        };
        pretrain(recipe, &options).map(|s| s.steps)
    };
    // Another recipe (another seed).
    let text = recipe_text(&corpus.root, 10, 2);
    assert!(text.contains("seed = 7"));
    let other = Recipe::parse(&text.replace("seed = 7", "seed = 8"), Path::new("t.toml")).unwrap();
    let err = resume(&other).unwrap_err().to_string();
    assert!(
        err.contains("recipe") && err.contains("--overwrite"),
        "{err}"
    );
    // The same recipe on shards that lost a document.
    let shards: Vec<_> = std::fs::read_dir(corpus.root.join("shards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let last = shards.iter().max().unwrap();
    let shard = herd_data::Shard::open(last).unwrap();
    let docs: Vec<Vec<u32>> = (0..shard.n_docs() - 1).map(|d| shard.document(d)).collect();
    let vocab = shard.vocab_size();
    drop(shard);
    let mut writer = herd_data::ShardWriter::create(last, vocab).unwrap();
    for doc in &docs {
        writer.push(doc).unwrap();
    }
    writer.finish().unwrap();
    let err = resume(&recipe).unwrap_err().to_string();
    assert!(err.contains("data") && !err.contains("recipe"), "{err}");
    // Starting again over the old run is an explicit choice.
    let options = RunOptions {
        out: out.clone(),
        max_steps: Some(2),
        resume: false,
        overwrite: true,
        progress: false,
    };
    assert_eq!(pretrain(&recipe, &options).unwrap().steps, 2);
}

#[test]
fn validation_loss_falls_well_below_the_unigram_entropy() {
    let Some(corpus) = corpus() else { return };
    let recipe = recipe(&corpus, 400, 40);
    let out = corpus.root.join("run");
    let summary = run(&recipe, &out, None, false);
    let val = summary.val_loss.unwrap();
    let lines = metrics::read(&out.join("metrics.jsonl")).unwrap();
    let first_val = lines.iter().find_map(|m| m.val_loss).unwrap();
    println!(
        "unigram entropy {:.3} nats; validation loss {first_val:.3} at step 10, {val:.3} at the end",
        corpus.unigram_entropy
    );
    assert!(
        val < corpus.unigram_entropy - 0.5,
        "{val} vs {}",
        corpus.unigram_entropy
    );
    assert!(val < first_val);
    // The final model loads for generation as an HF folder with its tokenizer.
    let loaded =
        herd_model::checkpoint::load(&out.join("final"), &candle_core::Device::Cpu).unwrap();
    assert_eq!(loaded.config, recipe.model);
}

#[test]
fn diverging_runs_skip_bad_steps_then_stop_with_a_clear_error() {
    let Some(corpus) = corpus() else { return };
    let mut recipe = recipe(&corpus, 20, 4);
    recipe.lr.peak_lr = 1e30; // the weights blow up after the first update
    recipe.training.max_bad_steps_in_a_row = 2;
    let out = corpus.root.join("diverged");
    let options = RunOptions {
        out: out.clone(),
        max_steps: None,
        resume: false,
        overwrite: false,
        progress: false,
    };
    let err = pretrain(&recipe, &options).unwrap_err().to_string();
    assert!(
        err.contains("non-finite") && err.contains("learning rate"),
        "{err}"
    );
    let lines = metrics::read(&out.join("metrics.jsonl")).unwrap();
    let skipped: Vec<u64> = lines.iter().filter(|m| m.skipped).map(|m| m.step).collect();
    assert_eq!(
        skipped.len(),
        3,
        "two tolerated, the third stops the run: {skipped:?}"
    );
    assert!(!lines[0].skipped, "the first step is finite");
}

//! Fuzzing the readers of outside data: fastText models (a classifier trained by herd, and
//! fastText's own `lid.176.ftz`), WARC archives, HTML pages, JSON Lines (plain, gzip, zstd),
//! JSON arrays, Parquet tables (written by pyarrow, tools/reference/reader_fixtures.py), token
//! shards and pipeline files. Every mutated input must be read or refused with an error (a bad
//! record counted), never panic. Regression cases live in `tests/fuzz/<target>/`;
//! `HERD_FUZZ_CASES=N` runs more cases.

use std::path::{Path, PathBuf};

use herd_data::classifier::{train, ClassifierConfig};
use herd_data::fasttext::FastTextModel;
use herd_data::pipeline::{run, Pipeline, RunOptions};
use herd_data::reader::{read_documents, Fields};
use herd_data::{Shard, ShardWriter};
use herd_util::fuzz;

fn regressions(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz")
        .join(target)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

/// Predicts a few lines with whatever loads.
fn load_and_predict(bytes: &[u8]) {
    if let Ok(model) = FastTextModel::from_bytes(bytes, Path::new("case.bin")) {
        for line in [
            "the river",
            "",
            "Bonjour tout le monde",
            "ünïcödé 日本語 🦙",
        ] {
            let _ = model.predict(line, 3);
        }
    }
}

#[test]
fn fasttext_classifiers() {
    let examples: Vec<(String, String)> = (0..40)
        .map(|i| {
            let label = if i % 2 == 0 { "hq" } else { "lq" };
            (
                label.to_string(),
                format!("word{} text{} the end", i % 7, i % 5),
            )
        })
        .collect();
    let config = ClassifierConfig {
        dim: 4,
        bucket: 50,
        epochs: 1,
        ..Default::default()
    };
    let seed = train(&examples, &config).unwrap();
    fuzz::run(
        "fasttext_bin",
        &[seed],
        &regressions("fasttext_bin"),
        400,
        load_and_predict,
    );
}

#[test]
fn fasttext_lid176() {
    let Some(path) = herd_util::testing::asset("fasttext/lid.176.ftz") else {
        return;
    };
    let seed = std::fs::read(path).unwrap();
    fuzz::run(
        "fasttext_ftz",
        &[seed],
        &regressions("fasttext_ftz"),
        40,
        load_and_predict,
    );
}

/// Reads a file of kind `name` (its extension says how) written with `bytes`.
fn read_as(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let fields = Fields::text("text");
    let mut bad = Vec::new();
    let _ = read_documents(&path, &fields, &mut bad, &mut |_| Ok(()));
}

fn warc_record(kind: &str, uri: &str, block: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "WARC/1.0\r\nWARC-Type: {kind}\r\nWARC-Target-URI: {uri}\r\nWARC-Date: 2024-01-01T00:00:00Z\r\nContent-Length: {}\r\n\r\n",
        block.len()
    )
    .into_bytes();
    r.extend_from_slice(block);
    r.extend_from_slice(b"\r\n\r\n");
    r
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), Default::default());
    std::io::Write::write_all(&mut enc, bytes).unwrap();
    enc.finish().unwrap()
}

const PAGE: &str = "<html><head><meta charset=\"utf-8\"><title>T</title></head><body>\
    <nav><a href=\"/\">Home</a></nav><article><h1>River floods</h1><p>The river rose, and the \
    town, which had seen floods before, moved to the hill.</p><ul><li>one</li><li>two</li></ul>\
    <table><tr><td>a</td><td>b</td></tr></table><pre>code  here</pre></article>\
    <div class=\"comments\">c</div><footer>f</footer></body></html>";

#[test]
fn warc_archives() {
    let dir = tempfile::tempdir().unwrap();
    let mut warc = warc_record("warcinfo", "", b"software: herd");
    let response = format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n{PAGE}");
    warc.extend(warc_record("response", "http://a/", response.as_bytes()));
    warc.extend(warc_record(
        "response",
        "http://b/",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n<p>Hi\r\n5\r\n!</p>\r\n0\r\n\r\n",
    ));
    let seeds = vec![warc.clone()];
    fuzz::run("warc", &seeds, &regressions("warc"), 400, |bytes| {
        read_as(dir.path(), "case.warc", bytes)
    });
    fuzz::run(
        "warc_gz",
        &[gzip(&warc)],
        &regressions("warc_gz"),
        200,
        |bytes| read_as(dir.path(), "case.warc.gz", bytes),
    );
}

#[test]
fn html_pages() {
    let dir = tempfile::tempdir().unwrap();
    let latin1 = b"<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=iso-8859-1\"></head><body><p>Bruneti\xe8re \xe9crit</p></body></html>".to_vec();
    let seeds = vec![PAGE.as_bytes().to_vec(), latin1];
    fuzz::run("html", &seeds, &regressions("html"), 400, |bytes| {
        read_as(dir.path(), "case.html", bytes);
        let _ = herd_data::extract::extract(bytes);
    });
}

#[test]
fn json_records() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = b"{\"text\": \"one\", \"url\": \"http://a/\", \"date\": \"2024\"}\n{\"text\": \"two \\u00e9\"}\nnot json\n{\"id\": 3}\n".to_vec();
    let array = b"[{\"text\": \"one\"}, {\"text\": \"two\", \"url\": null}, 3]".to_vec();
    fuzz::run(
        "jsonl",
        std::slice::from_ref(&jsonl),
        &regressions("jsonl"),
        300,
        |bytes| read_as(dir.path(), "case.jsonl", bytes),
    );
    fuzz::run(
        "jsonl_gz",
        &[gzip(&jsonl)],
        &regressions("jsonl_gz"),
        300,
        |bytes| read_as(dir.path(), "case.jsonl.gz", bytes),
    );
    let zst = fixture("docs.jsonl.zst");
    fuzz::run(
        "jsonl_zst",
        &[zst],
        &regressions("jsonl_zst"),
        300,
        |bytes| read_as(dir.path(), "case.jsonl.zst", bytes),
    );
    fuzz::run(
        "json_array",
        &[array],
        &regressions("json_array"),
        300,
        |bytes| read_as(dir.path(), "case.json", bytes),
    );
}

#[test]
fn parquet_tables() {
    let dir = tempfile::tempdir().unwrap();
    let seed = fixture("docs.parquet");
    fuzz::run("parquet", &[seed], &regressions("parquet"), 400, |bytes| {
        read_as(dir.path(), "case.parquet", bytes)
    });
}

#[test]
fn token_shards() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.tokens");
    let mut writer = ShardWriter::create(&path, 1000).unwrap();
    for doc in [vec![1u32, 5, 999], vec![], vec![7; 20]] {
        writer.push(&doc).unwrap();
    }
    writer.finish().unwrap();
    let seed = std::fs::read(&path).unwrap();
    let case = dir.path().join("case.tokens");
    fuzz::run("shard", &[seed], &regressions("shard"), 400, |bytes| {
        std::fs::write(&case, bytes).unwrap();
        if let Ok(shard) = Shard::open(&case) {
            for d in 0..shard.n_docs() {
                assert!(shard.document(d).iter().all(|&t| t < shard.vocab_size()));
            }
        }
    });
}

/// Mutated pipeline files are loaded, and those that load run on three documents.
#[test]
fn pipeline_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("in")).unwrap();
    std::fs::write(
        root.join("in/a.jsonl"),
        "{\"text\": \"the river ran past the mill and the town slept\"}\n\
         {\"text\": \"the river ran past the mill and the town slept\"}\n\
         {\"text\": \"Write to jane@example.org.\\nHome | About\"}\n",
    )
    .unwrap();
    let seed = format!(
        "[input]\npaths = [{:?}]\n[output]\ndir = {:?}\nremoved = true\n\
         [[stages]]\nkind = \"pii\"\n[[stages]]\nkind = \"gopher_quality\"\nmin_words = 1\n\
         [[stages]]\nkind = \"gopher_repetition\"\n[[stages]]\nkind = \"dirty_words\"\n\
         [[stages]]\nkind = \"exact_dedup\"\n[[stages]]\nkind = \"minhash\"\nngram = 2\nbands = 4\nrows = 2\n\
         [[stages]]\nkind = \"line_dedup\"\nmax_occurrences = 1\n[[stages]]\nkind = \"token_kl\"\nmin_words = 1\n",
        root.join("in"),
        root.join("out")
    );
    let file = root.join("p.toml");
    let options = RunOptions {
        tasks: 1,
        rank: 0,
        overwrite: true,
    };
    fuzz::run(
        "pipeline_toml",
        &[seed.into_bytes()],
        &regressions("pipeline_toml"),
        200,
        |bytes| {
            std::fs::write(&file, bytes).unwrap();
            if let Ok(pipeline) = Pipeline::load(&file, Path::new("unused.ftz")) {
                // Only run pipelines that write where the seed does (a mutated path could point
                // anywhere).
                if pipeline.out == root.join("out") && pipeline.inputs == [root.join("in")] {
                    let _ = run(&pipeline, &options, &mut |_| {});
                }
            }
        },
    );
}

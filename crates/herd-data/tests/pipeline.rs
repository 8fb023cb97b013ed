//! A curation pipeline end to end on hand-made documents: what each stage removes, the
//! metadata written beside the text, and task sharding.

use std::io::Read;
use std::path::Path;

use herd_data::pipeline::{run, Pipeline, RunOptions};
use serde_json::{json, Value};

/// A paragraph of `n` distinct words from `seed`.
fn words(seed: usize, n: usize) -> String {
    (0..n)
        .map(|i| format!("w{}x{}", seed, (i * 7919 + seed * 104_729) % 100_003))
        .collect::<Vec<_>>()
        .join(" ")
}

fn write_jsonl(path: &Path, texts: &[String]) {
    let lines: String = texts
        .iter()
        .map(|t| json!({"text": t}).to_string() + "\n")
        .collect();
    std::fs::write(path, lines).unwrap();
}

fn read_docs(dir: &Path) -> Vec<Value> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".jsonl.gz"))
        .collect();
    names.sort();
    let mut docs = Vec::new();
    for name in names {
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(name).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        docs.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    docs
}

/// Options of a run in one task, resuming what is there.
fn one_task() -> RunOptions {
    RunOptions {
        tasks: 1,
        rank: 0,
        overwrite: false,
    }
}

fn pipeline(root: &Path, out: &str) -> Pipeline {
    let file = root.join(format!("{out}.toml"));
    std::fs::write(
        &file,
        format!(
            "[input]\npaths = [{:?}]\n[output]\ndir = {:?}\n\
             [[stages]]\nkind = \"pii\"\n[[stages]]\nkind = \"exact_dedup\"\n\
             [[stages]]\nkind = \"minhash\"\n[[stages]]\nkind = \"line_dedup\"\nmax_occurrences = 6\n",
            root.join("in"),
            root.join(out)
        ),
    )
    .unwrap();
    Pipeline::load(&file, Path::new("unused.ftz")).unwrap()
}

#[test]
fn stages_remove_duplicates_and_boilerplate_and_redact_pii() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("in")).unwrap();
    let menu = "Home | Products | Contact";
    // Ten articles, each with the menu line; #1 repeats #0 exactly, #2 is #0 with one word
    // changed, #3 carries an e-mail address.
    let mut articles: Vec<String> = (0..10)
        .map(|i| format!("{menu}\n{}", words(i, 200)))
        .collect();
    articles[1] = articles[0].clone();
    articles[2] = articles[0].replacen("w0x", "changed", 1);
    articles[3].push_str("\nWrite to jane@example.org for details.");
    write_jsonl(&root.join("in/a.jsonl"), &articles[..5]);
    write_jsonl(&root.join("in/b.jsonl"), &articles[5..]);
    std::fs::write(root.join("in/c.jsonl"), "{\"text\": 1}\nnot json\n").unwrap();
    let p = pipeline(root, "out");
    let summary = run(&p, &one_task(), &mut |_| {}).unwrap();
    let docs = read_docs(&root.join("out/docs"));
    assert_eq!(docs.len(), 8, "{docs:#?}");
    let removed = |phase: usize, reason: &str| summary.phases[phase].1.removed.get(reason).copied();
    assert_eq!(removed(1, "exact_dedup"), Some(1));
    assert_eq!(removed(2, "minhash"), Some(1));
    // The menu line is in 8 remaining documents (> 6): gone from all of them.
    assert_eq!(summary.phases[3].1.lines_removed, 8);
    assert!(docs
        .iter()
        .all(|d| !d["text"].as_str().unwrap().contains(menu)));
    let redacted: Vec<&Value> = docs.iter().filter(|d| d.get("pii").is_some()).collect();
    assert_eq!(redacted.len(), 1);
    assert!(redacted[0]["text"]
        .as_str()
        .unwrap()
        .contains("email@example.com"));
    assert_eq!(redacted[0]["pii"]["emails"], 1);
    // Both bad records of c.jsonl are counted with their places.
    assert_eq!(summary.phases[0].1.bad_records, 2);
    let examples = &summary.phases[0].1.bad_examples;
    for place in ["c.jsonl:1", "c.jsonl:2"] {
        assert!(examples.iter().any(|e| e.contains(place)), "{examples:?}");
    }
    // Two tasks split the files: task 1 alone has b.jsonl's five articles.
    let p = pipeline(root, "out2");
    let s1 = run(
        &p,
        &RunOptions {
            tasks: 2,
            rank: 1,
            overwrite: false,
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!((s1.files, read_docs(&root.join("out2/docs")).len()), (1, 5));
}

#[test]
fn url_dedup_keeps_the_newest_page_and_token_kl_removes_the_outlier() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("in")).unwrap();
    let prose = |i: usize| {
        format!(
            "the river ran past the old mill and the town slept in the valley while the rain \
             fell on the roofs of the houses and the people of the town {i} waited for the spring"
        )
    };
    let mut records: Vec<Value> = (0..20)
        .map(|i| json!({"text": prose(i), "url": format!("https://x.example/{i}"), "timestamp": "2020-01-01T00:00:00Z"}))
        .collect();
    // Page 0 crawled again later with other text: only the later copy stays.
    records.push(json!({"text": prose(100), "url": "https://x.example/0", "timestamp": "2021-06-01T00:00:00Z"}));
    // A page of tokens the corpus never uses.
    let odd: String = (0..40).map(|i| format!("zq{i}k ")).collect();
    records.push(
        json!({"text": odd, "url": "https://odd.example/", "timestamp": "2020-01-01T00:00:00Z"}),
    );
    let lines: String = records.iter().map(|r| r.to_string() + "\n").collect();
    std::fs::write(root.join("in/c4.jsonl"), lines).unwrap();
    let file = root.join("p.toml");
    std::fs::write(
        &file,
        format!(
            "[input]\npaths = [{:?}]\ndate_field = \"timestamp\"\n[output]\ndir = {:?}\nremoved = true\n\
             [[stages]]\nkind = \"url_dedup\"\n[[stages]]\nkind = \"token_kl\"\nmin_words = 20\n",
            root.join("in"),
            root.join("out")
        ),
    )
    .unwrap();
    let p = Pipeline::load(&file, Path::new("unused.ftz")).unwrap();
    let summary = run(&p, &one_task(), &mut |_| {}).unwrap();
    let removed = |phase: usize, reason: &str| summary.phases[phase].1.removed.get(reason).copied();
    // A corpus stage first reads the input itself: no empty phase before it.
    assert_eq!(summary.phases.len(), 2);
    assert_eq!(removed(0, "url_dedup"), Some(1));
    assert_eq!(removed(1, "token_kl"), Some(1));
    let docs = read_docs(&root.join("out/docs"));
    assert_eq!(docs.len(), 20);
    let page0: Vec<&Value> = docs
        .iter()
        .filter(|d| d["url"] == "https://x.example/0")
        .collect();
    assert_eq!(page0.len(), 1);
    assert_eq!(page0[0]["date"], "2021-06-01T00:00:00Z");
    assert!(page0[0]["text"].as_str().unwrap().contains("town 100"));
    assert!(docs.iter().all(|d| d["token_kl"].as_f64().is_some()));
    assert!(docs.iter().all(|d| d["url"] != "https://odd.example/"));
    // With `removed = true` the two removed documents are kept aside with their reasons.
    let removed = read_docs(&root.join("out/removed"));
    let reasons: Vec<(&str, &str)> = removed
        .iter()
        .map(|d| {
            (
                d["url"].as_str().unwrap(),
                d["removed_by"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("https://x.example/0", "url_dedup"),
            ("https://odd.example/", "token_kl")
        ]
    );
}

/// A run folder is reused only for the inputs and settings it was made from: a changed input
/// or stage is refused with a message (it once reported "kept 5/10" after the input shrank to
/// one document), and `overwrite` starts again.
#[test]
fn output_of_other_inputs_or_settings_is_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("in")).unwrap();
    let articles: Vec<String> = (0..10).map(|i| words(i, 100)).collect();
    write_jsonl(&root.join("in/a.jsonl"), &articles);
    let p = pipeline(root, "out");
    let options = one_task();
    let first = run(&p, &options, &mut |_| {}).unwrap();
    assert_eq!(first.phases.last().unwrap().1.docs_out, 10);
    // docs/ holds documents only: a tokenizer or another pipeline takes it as input.
    for entry in std::fs::read_dir(root.join("out/docs")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            name.ends_with(".jsonl.gz") && !name.starts_with('.'),
            "{name}"
        );
    }
    // Run again unchanged: the finished files are taken as they are.
    let again = run(&p, &options, &mut |_| {}).unwrap();
    assert_eq!(again.phases, first.phases);
    // The input shrinks to one document: refused, not "kept 10".
    write_jsonl(&root.join("in/a.jsonl"), &articles[..1]);
    let err = run(&p, &options, &mut |_| {}).unwrap_err().to_string();
    assert!(
        err.contains("other input files") && err.contains("--overwrite"),
        "{err}"
    );
    let overwrite = RunOptions {
        overwrite: true,
        ..options.clone()
    };
    let redone = run(&p, &overwrite, &mut |_| {}).unwrap();
    assert_eq!(redone.phases.last().unwrap().1.docs_out, 1);
    assert_eq!(read_docs(&root.join("out/docs")).len(), 1);
    // A stage's settings change: refused too, naming the pipeline.
    let file = root.join("out.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("max_occurrences = 6", "max_occurrences = 3"),
    )
    .unwrap();
    let changed = Pipeline::load(&file, Path::new("unused.ftz")).unwrap();
    let err = run(&changed, &options, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pipeline") && err.contains("--overwrite"),
        "{err}"
    );
    // Several tasks may not overwrite each other's output.
    let tasks = RunOptions {
        tasks: 2,
        rank: 0,
        overwrite: true,
    };
    assert!(run(&changed, &tasks, &mut |_| {}).is_err());
}

/// Settings that make no sense are refused when the pipeline is read, naming the file, the
/// stage and the key.
#[test]
fn stage_settings_are_checked_with_file_stage_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cases = [
        ("kind = \"minhash\"\nrows = 0", "rows"),
        ("kind = \"minhash\"\nbands = 0", "bands"),
        ("kind = \"minhash\"\nbands = 100000", "bands"),
        ("kind = \"minhash\"\nngram = 0", "ngram"),
        (
            "kind = \"line_dedup\"\nmax_occurrences = 0",
            "max_occurrences",
        ),
        (
            "kind = \"gopher_quality\"\nmax_bullet_lines = nan",
            "max_bullet_lines",
        ),
        (
            "kind = \"gopher_quality\"\nmin_words = 100\nmax_words = 10",
            "max_words",
        ),
        (
            "kind = \"gopher_repetition\"\nmax_duplicate_lines = -0.5",
            "max_duplicate_lines",
        ),
        ("kind = \"token_kl\"\nmads = inf", "mads"),
        ("kind = \"dirty_words\"\nmax_matches = 0", "max_matches"),
    ];
    for (stage, key) in cases {
        let file = root.join("bad.toml");
        std::fs::write(
            &file,
            format!("[input]\npaths = [\"in\"]\n[output]\ndir = \"out\"\n[[stages]]\nkind = \"pii\"\n[[stages]]\n{stage}\n"),
        )
        .unwrap();
        let err = Pipeline::load(&file, Path::new("unused.ftz"))
            .err()
            .unwrap_or_else(|| panic!("{stage} was accepted"))
            .to_string();
        assert!(
            err.contains("bad.toml") && err.contains("#2") && err.contains(&format!("`{key}`")),
            "{stage}: {err}"
        );
    }
}

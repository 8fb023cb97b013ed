//! The commands with bad files, records and settings, as a user meets them: each is refused
//! with a message naming what to fix, or the bad record is reported and the rest goes on; no
//! panic, nothing already written lost, no output silently mixed with an older one.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn herd<S: AsRef<std::ffi::OsStr>>(args: &[S], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn refused(args: &[&str], expect: &[&str]) {
    let out = herd(args, b"");
    let err = stderr(&out);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    for e in expect {
        assert!(err.contains(e), "{args:?}: {e:?} not in {err}");
    }
}

#[test]
fn nonsense_numbers_are_refused_by_flag() {
    let m = ["--model", "unused.gguf", "--prompt", "hi"];
    for (flag, value) in [
        ("--temperature", "NaN"),
        ("--temperature", "-1"),
        ("--top-p", "0"),
        ("--top-p", "1.5"),
        ("--min-p", "2"),
        ("--repetition-penalty", "0"),
    ] {
        let mut args = vec!["generate".to_string()];
        args.extend(m.iter().map(|a| a.to_string()));
        args.push(format!("{flag}={value}"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&args, &[flag, value]);
    }
    refused(&["bench", "--model", "x.gguf", "-r", "0"], &["-r"]);
    refused(
        &["--threads", "0", "bench", "--model", "x.gguf"],
        &["--threads"],
    );
    refused(
        &[
            "data",
            "train-classifier",
            "--data",
            "x.jsonl",
            "--out",
            "y.bin",
            "--held-out",
            "1",
        ],
        &["--held-out"],
    );
}

#[test]
fn outputs_are_not_silently_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let s = |p: &Path| p.display().to_string();
    let text: String = (0..300)
        .map(|i| format!("the river {i} ran past the mill and the town slept in the valley\n"))
        .collect();
    std::fs::write(root.join("a.txt"), &text).unwrap();
    let tokenizer = root.join("tok.model");
    let train = |extra: &[&str]| {
        let mut args = vec![
            "tokenizer".to_string(),
            "train".into(),
            "--input".into(),
            s(&root.join("a.txt")),
            "--vocab-size".into(),
            "600".into(),
            "--min-frequency".into(),
            "1".into(),
            "--out".into(),
            s(&tokenizer),
        ];
        args.extend(extra.iter().map(|e| e.to_string()));
        herd(&args, b"")
    };
    assert!(train(&[]).status.success());
    let before = std::fs::read(&tokenizer).unwrap();
    let again = train(&[]);
    assert!(
        !again.status.success() && stderr(&again).contains("--overwrite"),
        "{}",
        stderr(&again)
    );
    assert!(train(&["--overwrite"]).status.success());
    assert_eq!(
        std::fs::read(&tokenizer).unwrap(),
        before,
        "same input, same vocabulary"
    );
    // Shards: a second run into the same folder is refused; with --overwrite the folder holds
    // that run's shards only.
    let shards = root.join("shards");
    let tokenize = |extra: &[&str], shard_tokens: &str| {
        let mut args = vec![
            "data".to_string(),
            "tokenize".into(),
            "--tokenizer".into(),
            s(&tokenizer),
            "--input".into(),
            s(&root.join("a.txt")),
            "--split-chars".into(),
            "200".into(),
            "--shard-tokens".into(),
            shard_tokens.into(),
            "--out".into(),
            s(&shards),
        ];
        args.extend(extra.iter().map(|e| e.to_string()));
        herd(&args, b"")
    };
    assert!(tokenize(&[], "1000").status.success());
    let count = || {
        std::fs::read_dir(&shards)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "tokens")
            })
            .count()
    };
    let many = count();
    assert!(many > 1);
    let again = tokenize(&[], "1000000");
    assert!(!again.status.success() && stderr(&again).contains("--overwrite"));
    assert!(tokenize(&["--overwrite"], "1000000").status.success());
    assert_eq!(
        count(),
        1,
        "no shard of the earlier run is left beside the new one"
    );
    // A folder herd did not write is never used.
    std::fs::create_dir(root.join("mine")).unwrap();
    std::fs::write(root.join("mine/notes.txt"), "keep").unwrap();
    let mut args = vec!["data", "tokenize", "--tokenizer"];
    let (t, i, o) = (s(&tokenizer), s(&root.join("a.txt")), s(&root.join("mine")));
    args.extend([t.as_str(), "--input", &i, "--out", &o, "--overwrite"]);
    let out = herd(&args, b"");
    assert!(
        !out.status.success() && stderr(&out).contains("did not write"),
        "{}",
        stderr(&out)
    );
    assert!(root.join("mine/notes.txt").exists());
}

#[test]
fn bad_stdin_and_binary_files_are_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // A binary file given to the extractor.
    let png = root.join("image.html");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01").unwrap();
    let page = root.join("page.html");
    std::fs::write(&page, "<html><body><p>The river flooded the town, and everyone moved up the hill to stay dry.</p></body></html>").unwrap();
    let out = herd(
        &[
            "data",
            "extract",
            &png.display().to_string(),
            &page.display().to_string(),
        ],
        b"",
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("binary file"), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("The river flooded") && !text.contains("PNG"),
        "{text:?}"
    );
    // JSONL on stdin with a line that is not UTF-8: reported, the others converted.
    let tokenizer = root.join("tok.model");
    let ranks = herd_tokenizer::train::train_ranks(["hello world"].iter(), 600, 1).unwrap();
    std::fs::write(&tokenizer, herd_tokenizer::train::ranks_file_text(&ranks)).unwrap();
    let input = b"{\"text\": \"hello\"}\n{\"text\": \"bad \xff byte\"}\n{\"text\": \"world\"}\n";
    let out = herd(
        &[
            "tokens",
            "encode",
            "--jsonl",
            "--tokenizer",
            &tokenizer.display().to_string(),
        ],
        input,
    );
    let lines = String::from_utf8_lossy(&out.stdout);
    assert_eq!(lines.lines().count(), 2, "{lines}");
    assert!(stderr(&out).contains("stdin line 2"), "{}", stderr(&out));
    let out = herd(
        &[
            "tokens",
            "encode",
            "--tokenizer",
            &tokenizer.display().to_string(),
        ],
        b"ok \xff",
    );
    assert!(stderr(&out).contains("byte 3"), "{}", stderr(&out));
}

#[test]
fn langid_keeps_one_output_line_per_input_line() {
    let Some(model) = herd_util::testing::asset("fasttext/lid.176.ftz") else {
        return;
    };
    let input = b"Bonjour tout le monde\nHallo \xff\xfe Welt\n\nThe quick brown fox\n";
    let out = herd(
        &["data", "langid", "--model", &model.display().to_string()],
        input,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines[0].starts_with("fr\t") && lines[3].starts_with("en\t"),
        "{lines:?}"
    );
    assert!(
        stderr(&out).contains("stdin line 2: not UTF-8"),
        "{}",
        stderr(&out)
    );
}

/// `herd eval` refuses an unknown task, a task file with a key it does not do (named), a data
/// file with a bad record (its line named) and a threshold out of range — before any model is
/// loaded.
#[test]
fn eval_names_the_task_key_or_record_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).display().to_string();
    let m = ["eval", "--model", "unused.gguf", "--data-dir"];
    let run = |extra: &[&str], expect: &[&str]| {
        let mut args: Vec<String> = m.iter().map(|a| a.to_string()).collect();
        args.push(d(""));
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&args, expect);
    };
    run(&["--tasks", "arc_hard"], &["arc_hard", "arc_easy"]);
    let task = |extra: &str| {
        format!(
            "task: mine\ndataset_path: json\ndataset_kwargs: {{data_files: {{test: q.jsonl}}}}\n\
             test_split: test\noutput_type: multiple_choice\ndoc_to_text: q\n\
             doc_to_choice: c\ndoc_to_target: g\n{extra}"
        )
    };
    std::fs::write(d("bad.yaml"), task("process_docs: !function utils.p\n")).unwrap();
    run(&["--tasks", &d("bad.yaml")], &["bad.yaml", "process_docs"]);
    std::fs::write(d("good.yaml"), task("")).unwrap();
    std::fs::write(
        d("q.jsonl"),
        "{\"q\": \"a\", \"c\": [\"x\"], \"g\": 0}\n{\"q\": \n",
    )
    .unwrap();
    run(&["--tasks", &d("good.yaml")], &["q.jsonl:2"]);
    run(
        &["--tasks", "arc_easy", "--contamination-threshold", "1.5"],
        &["--contamination-threshold"],
    );
}

#[test]
fn parallel_layouts_the_model_cannot_take_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let template = include_str!("../../herd-train/tests/fixtures/recipe.toml.in");
    let text = template
        .replace("{root}", &dir.path().display().to_string())
        .replace("{total}", "20")
        .replace("{half}", "10")
        .replace("{anneal}", "5");
    let out = dir.path().join("run");
    for (section, expect) in [
        (
            "pp = 3",
            "3 stages need at least 4 blocks (the first and the last stage each give a place to \
             the embedding or the output layer); the model has 2",
        ),
        (
            "tp = 3",
            "the model's n_heads (4) must split into tp equal parts",
        ),
        (
            // 16 rows in micro-batches of 4: 4 per step, not a multiple of pp = 3.
            "pp = 3\nvirtual_stages = 2",
            "a step of the stage until step 10 has 4 micro-batches per data-parallel rank",
        ),
        (
            "cp = 3",
            "a stage's seq_len (32) must split into 2 × cp equal chunks",
        ),
    ] {
        let recipe = dir.path().join("recipe.toml");
        std::fs::write(&recipe, format!("{text}\n[parallel]\n{section}\n")).unwrap();
        let (recipe, out) = (recipe.display().to_string(), out.display().to_string());
        refused(
            &["pretrain", "--recipe", &recipe, "--out", &out],
            &["[parallel]", expect],
        );
    }
    assert!(!out.exists(), "a refused run made its folder");
}

//! `herd data run` killed with SIGKILL at random moments and started again, repeatedly, ends
//! with exactly the documents and counts of a run never interrupted (the resume
//! criterion: no loss, no duplicates), on the Gutenberg books cut into many documents.

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// 15 books as 30 JSONL files of ~1,000-character documents (paragraph runs), with every
/// third file repeated under another name so the de-duplication stages have work.
fn write_inputs(dir: &Path) -> bool {
    let Some(books) = herd_util::testing::shared("data/books/gutenberg") else {
        return false;
    };
    let mut names: Vec<_> = std::fs::read_dir(&books)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    std::fs::create_dir_all(dir.join("in")).unwrap();
    let mut n = 0;
    for book in names.iter().filter(|p| !p.ends_with("README.txt.gz")) {
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(book).unwrap())
            .read_to_end(&mut bytes)
            .unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let mut docs = Vec::new();
        let mut current = String::new();
        for paragraph in text.split("\n\n") {
            current.push_str(paragraph);
            current.push_str("\n\n");
            if current.len() > 1_000 {
                docs.push(std::mem::take(&mut current));
            }
        }
        for half in docs.chunks(docs.len().div_ceil(2)) {
            let lines: String = half
                .iter()
                .map(|t| serde_json::json!({ "text": t }).to_string() + "\n")
                .collect();
            std::fs::write(dir.join(format!("in/{n:03}.jsonl")), &lines).unwrap();
            if n % 3 == 0 {
                std::fs::write(dir.join(format!("in/{n:03}-copy.jsonl")), &lines).unwrap();
            }
            n += 1;
        }
    }
    true
}

fn pipeline(dir: &Path, out: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{out}.toml"));
    let text = format!(
        "[input]\npaths = [{:?}]\n[output]\ndir = {:?}\n\
         [[stages]]\nkind = \"gopher_repetition\"\n[[stages]]\nkind = \"pii\"\n\
         [[stages]]\nkind = \"exact_dedup\"\n[[stages]]\nkind = \"minhash\"\n\
         [[stages]]\nkind = \"line_dedup\"\n[[stages]]\nkind = \"gopher_quality\"\n",
        dir.join("in"),
        dir.join(out)
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// How many (phase, input file) pieces of a run are finished: their counts files.
fn finished_files(out: &Path) -> usize {
    fn count(dir: &Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .map(|p| {
                    if p.is_dir() {
                        count(&p)
                    } else {
                        usize::from(p.to_string_lossy().ends_with(".counts.json"))
                    }
                })
                .sum()
        })
    }
    count(out)
}

/// Every output file's decompressed text, by name, and the task's counts.
fn outputs(out: &Path) -> (Vec<(String, String)>, String) {
    let mut files: Vec<_> = std::fs::read_dir(out.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let docs = files
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".jsonl.gz"))
        .map(|p| {
            let mut text = String::new();
            flate2::read::GzDecoder::new(std::fs::File::open(p).unwrap())
                .read_to_string(&mut text)
                .unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), text)
        })
        .collect();
    let counts = std::fs::read_to_string(out.join("counts/00000.json")).unwrap();
    // Seconds differ between runs; everything else must not.
    let counts: serde_json::Value = serde_json::from_str(&counts).unwrap();
    (docs, counts["phases"].to_string())
}

#[test]
fn killed_runs_resume_to_the_same_documents() {
    let dir = tempfile::tempdir().unwrap();
    if !write_inputs(dir.path()) {
        return;
    }
    let herd = env!("CARGO_BIN_EXE_herd");
    let whole = pipeline(dir.path(), "whole");
    assert!(Command::new(herd)
        .args(["data", "run", "--quiet"])
        .arg(&whole)
        .status()
        .unwrap()
        .success());
    let reference = outputs(&dir.path().join("whole"));
    assert!(reference.0.len() >= 30);
    let killed = pipeline(dir.path(), "killed");
    let killed_out = dir.path().join("killed");
    // Each start is killed (SIGKILL) as soon as it has finished one to three more files of
    // some phase than the start before — a point in the run's own progress, whatever the
    // machine's speed — while the files after them are being written.
    let mut kills = 0;
    for attempt in 0..30usize {
        let before = finished_files(&killed_out);
        let mut child = Command::new(herd)
            .args(["data", "run", "--quiet"])
            .arg(&killed)
            .spawn()
            .unwrap();
        let target = before + 1 + attempt % 3;
        let exited = loop {
            if child.try_wait().unwrap().is_some() {
                break true;
            }
            if finished_files(&killed_out) >= target {
                break false;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if exited {
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    assert!(Command::new(herd)
        .args(["data", "run", "--quiet"])
        .arg(&killed)
        .status()
        .unwrap()
        .success());
    eprintln!("killed {kills} times");
    assert!(kills >= 20, "only {kills} kills: make the input larger");
    assert_eq!(outputs(&dir.path().join("killed")), reference);
    // The run's report: a table and a PNG.
    let report = Command::new(herd)
        .args(["data", "report"])
        .arg(dir.path().join("killed"))
        .output()
        .unwrap();
    assert!(report.status.success());
    assert!(String::from_utf8_lossy(&report.stderr).contains("exact_dedup"));
    let png = std::fs::read(dir.path().join("killed/report.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
}

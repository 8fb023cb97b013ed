//! Files written by independent libraries (`tools/reference/reader_fixtures.py`: pyarrow for
//! Parquet with snappy and zstd pages in two row groups, zstandard for `.jsonl.zst`) read back
//! as documents with their URLs and dates; a null text is a counted bad record.

use std::path::Path;

use herd_data::reader::{read_documents, Document, Fields};

fn read(name: &str) -> (Vec<Document>, Vec<String>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let (mut docs, mut bad) = (Vec::new(), Vec::new());
    read_documents(&path, &Fields::default(), &mut bad, &mut |d| {
        docs.push(d);
        Ok(())
    })
    .unwrap();
    let bad = bad
        .into_iter()
        .map(|b| format!("{} {}", b.at, b.reason))
        .collect();
    (docs, bad)
}

/// (text, url, date) of each document.
fn fields_of(docs: &[Document]) -> Vec<(&str, Option<&str>, Option<&str>)> {
    docs.iter()
        .map(|d| (d.text.as_str(), d.url.as_deref(), d.date.as_deref()))
        .collect()
}

#[test]
fn parquet_rows_are_documents_with_url_and_date() {
    let (docs, bad) = read("docs.parquet");
    assert_eq!(
        fields_of(&docs),
        [
            (
                "First document, in the first row group.",
                Some("https://a.example/1"),
                Some("2023-01-02 03:04:05.000 +00:00")
            ),
            (
                "Second document: ünïcödé and emoji 🦙.",
                Some("https://a.example/2"),
                Some("2024-06-07 08:09:10.000 +00:00")
            ),
            ("Fourth document, second row group.", None, None),
        ]
    );
    assert!(docs[2].id.ends_with("docs.parquet#3"), "{}", docs[2].id);
    assert_eq!(bad.len(), 1);
    assert!(
        bad[0].contains("docs.parquet#2") && bad[0].contains("\"text\""),
        "{bad:?}"
    );
}

#[test]
fn a_parquet_file_without_the_text_column_names_the_columns() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/docs.parquet");
    let fields = Fields::text("content");
    let err = read_documents(&path, &fields, &mut Vec::new(), &mut |_| Ok(())).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("docs.parquet") && message.contains("\"content\""),
        "{message}"
    );
    assert!(message.contains("text, url, date, score"), "{message}");
}

#[test]
fn zstd_json_lines_are_read() {
    let (docs, bad) = read("docs.jsonl.zst");
    assert_eq!(
        fields_of(&docs),
        [
            (
                "zst one",
                Some("https://b.example/1"),
                Some("2023-05-01T00:00:00Z")
            ),
            ("zst two", Some("https://b.example/2"), None),
            ("zst three", None, None),
        ]
    );
    assert!(bad.is_empty());
}

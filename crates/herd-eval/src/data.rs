//! A task's documents: JSON Lines or JSON array files (plain, `.gz` or `.zst`), read through
//! herd-util's record reader as every herd data file is — one object per record, in file order.
//! A record that cannot be read is an error naming its place: a document left out would change
//! the evaluation.

use std::path::Path;

use anyhow::{bail, Result};
use herd_util::records::read_records;
use serde_json::{Map, Value};

/// One document: a record's columns.
pub type Doc = Map<String, Value>;

/// Reads the records of `path`; a record that is not a JSON object is an error naming its line.
pub fn read_docs(path: &Path) -> Result<Vec<Doc>> {
    let mut docs = Vec::new();
    let mut bad = Vec::new();
    read_records::<anyhow::Error>(path, &mut bad, &mut |record| match record.value {
        Value::Object(m) => {
            docs.push(m);
            Ok(())
        }
        _ => bail!("{}: the record is not a JSON object", record.at),
    })?;
    if let Some(first) = bad.first() {
        bail!(
            "{}: {} ({} bad records in all)",
            first.at,
            first.reason,
            bad.len()
        );
    }
    if docs.is_empty() {
        bail!("{}: no records", path.display());
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lines_arrays_and_gzip_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let lines = dir.path().join("a.jsonl");
        std::fs::write(&lines, "{\"q\": 1}\n\n{\"q\": 2}\n").unwrap();
        assert_eq!(read_docs(&lines).unwrap().len(), 2);
        let array = dir.path().join("b.json");
        std::fs::write(&array, "[{\"q\": 1}]").unwrap();
        assert_eq!(read_docs(&array).unwrap()[0]["q"], 1);
        let gz = dir.path().join("c.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, b"{\"q\": 3}\n").unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert_eq!(read_docs(&gz).unwrap()[0]["q"], 3);
        let bad = dir.path().join("d.jsonl");
        std::fs::write(&bad, "{\"q\": 1}\n[1]\n").unwrap();
        let err = read_docs(&bad).unwrap_err().to_string();
        assert!(err.contains("d.jsonl:2"), "{err}");
    }
}

//! A task's documents: JSON Lines (or one JSON array) files, optionally gzipped, read as the
//! harness's `json` dataset reads them — one object per record, in file order.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};

/// One document: a record's columns.
pub type Doc = Map<String, Value>;

/// Reads the records of `path`; a record that is not a JSON object is an error naming its line.
pub fn read_docs(path: &Path) -> Result<Vec<Doc>> {
    let mut raw = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut raw))
        .with_context(|| format!("reading data file {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .with_context(|| format!("{}: not a gzip file", path.display()))?;
        raw = out;
    }
    let text = String::from_utf8(raw).map_err(|e| {
        anyhow::anyhow!(
            "{}: not UTF-8 (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    if text.trim_start().starts_with('[') {
        let all: Vec<Value> = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a JSON array of records", path.display()))?;
        return all
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Object(m) => Ok(m),
                _ => bail!("{}: record {i} is not a JSON object", path.display()),
            })
            .collect();
    }
    let mut docs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(m)) => docs.push(m),
            Ok(_) => bail!(
                "{}:{}: the record is not a JSON object",
                path.display(),
                i + 1
            ),
            Err(e) => bail!("{}:{}: {e}", path.display(), i + 1),
        }
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

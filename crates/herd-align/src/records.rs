//! Records of post-training data files: a JSON array (`.json`, LLaMA-Factory's files) or one
//! JSON object per line (`.jsonl`, `.jsonl.gz`). Each record keeps where it came from
//! (`file:line` or `file#index`) for error reports; a line that is not JSON is a bad record,
//! counted and reported, not fatal.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use herd_data::reader::BadRecord;
use serde_json::Value;

/// One record and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// `file:line` (JSONL) or `file#index` (JSON array, from 0).
    pub at: String,
    /// The record.
    pub value: Value,
}

/// Every record of `path`; unreadable lines go to `bad`.
pub fn read_records(path: &Path, bad: &mut Vec<BadRecord>) -> Result<Vec<Record>, String> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| format!("{name}: {e}"))?;
    let gz = name.ends_with(".gz");
    let mut reader: Box<dyn BufRead> = if gz {
        Box::new(BufReader::new(MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    if name.trim_end_matches(".gz").ends_with(".json") {
        let mut text = String::new();
        reader
            .read_to_string(&mut text)
            .map_err(|e| format!("{name}: {e}"))?;
        let array = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Array(items)) => items,
            Ok(_) => return Err(format!("{name}: expected a JSON array of records")),
            Err(e) => return Err(format!("{name}: not JSON ({e}); JSONL files end in .jsonl")),
        };
        return Ok(array
            .into_iter()
            .enumerate()
            .map(|(i, value)| Record {
                at: format!("{name}#{i}"),
                value,
            })
            .collect());
    }
    let mut records = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| format!("{name}: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{name}:{}", n + 1);
        match serde_json::from_str(&line) {
            Ok(value) => records.push(Record { at, value }),
            Err(e) => bad.push(BadRecord {
                at,
                reason: format!("not JSON: {e}"),
            }),
        }
    }
    Ok(records)
}

//! Parquet tables (how FineWeb, RedPajama and most Hub data sets are published): one document
//! per row, its text, URL and date from the columns [`Fields`] names. Only those columns are
//! decoded (a projection), row group after row group, so memory stays at one row group's pages.
//! Read with the `parquet` crate's row API (no Arrow); snappy, zstd, lz4 and gzip pages.
//!
//! A row whose text is null or not a string is a bad record (`file#row`); a timestamp or date
//! column is turned into text (`2023-01-02 03:04:05.000 +00:00`) that orders like the times.
//! A file whose footer cannot be read is an error; rows that cannot be decoded (a corrupt page)
//! are one bad record, and the rows before them are kept.
//!
//! The `parquet` crate asserts on some corrupt metadata instead of returning an error (found by
//! herd's fuzz tests: "column start and length should not be negative"), so its calls run
//! under [`std::panic::catch_unwind`] and such a panic becomes this file's error.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use parquet::schema::types::Type;

use crate::error::{Error, Result};
use crate::reader::{BadRecord, Document, Fields};

/// The field's value as text: strings as they are, other scalars as parquet displays them.
fn text_of(field: &Field) -> Option<String> {
    match field {
        Field::Null => None,
        Field::Str(s) => Some(s.clone()),
        Field::Bytes(b) => std::str::from_utf8(b.data()).ok().map(String::from),
        Field::Group(_) | Field::ListInternal(_) | Field::MapInternal(_) => None,
        other => Some(other.to_string()),
    }
}

/// Runs a call into the `parquet` crate, turning its panic on a corrupt file into a message.
fn guarded<T>(call: impl FnOnce() -> T) -> std::result::Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("the Parquet reader failed ({message}): the file is corrupt")
    })
}

/// Calls `each` with every row of the Parquet file at `path` as a document.
pub fn read_parquet(
    path: &Path,
    fields: &Fields,
    bad: &mut Vec<BadRecord>,
    each: &mut dyn FnMut(Document) -> Result<()>,
) -> Result<()> {
    let corrupt = |e: parquet::errors::ParquetError| {
        Error::format(path, format!("not a readable Parquet file: {e}"))
    };
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = guarded(|| SerializedFileReader::new(file))
        .map_err(|m| Error::format(path, m))?
        .map_err(corrupt)?;
    let schema = reader.metadata().file_metadata().schema();
    let wanted = [&fields.text, &fields.url, &fields.date];
    let columns: Vec<Arc<Type>> = schema
        .get_fields()
        .iter()
        .filter(|f| wanted.contains(&&f.name().to_string()))
        .cloned()
        .collect();
    if !columns.iter().any(|c| c.name() == fields.text) {
        let names: Vec<&str> = schema.get_fields().iter().map(|f| f.name()).collect();
        return Err(Error::format(
            path,
            format!(
                "no column {:?} (columns: {}); name the text column with text_field",
                fields.text,
                names.join(", ")
            ),
        ));
    }
    let projection = Type::group_type_builder(schema.name())
        .with_fields(columns)
        .build()
        .map_err(corrupt)?;
    let mut rows = guarded(|| reader.get_row_iter(Some(projection)))
        .map_err(|m| Error::format(path, m))?
        .map_err(corrupt)?;
    for n in 0.. {
        let at = format!("{}#{n}", path.display());
        let failure = match guarded(|| rows.next()) {
            Ok(None) => break,
            Ok(Some(Ok(row))) => Ok(row),
            Ok(Some(Err(e))) => Err(e.to_string()),
            Err(message) => Err(message),
        };
        let row = match failure {
            Ok(row) => row,
            Err(reason) => {
                bad.push(BadRecord {
                    at,
                    reason: format!("{reason}; the rows after it cannot be read"),
                });
                break;
            }
        };
        // Displaying a value runs parquet's code too (a timestamp out of range panics in it).
        let values = guarded(|| {
            let (mut text, mut url, mut date) = (None, None, None);
            for (name, value) in row.get_column_iter() {
                let slot = if *name == fields.text {
                    &mut text
                } else if *name == fields.url {
                    &mut url
                } else {
                    &mut date
                };
                *slot = text_of(value);
            }
            (text, url, date)
        });
        let (text, url, date) = match values {
            Ok(values) => values,
            Err(reason) => {
                bad.push(BadRecord { at, reason });
                continue;
            }
        };
        match text {
            Some(text) => each(Document {
                id: at,
                text,
                url,
                date,
            })?,
            None => bad.push(BadRecord {
                at,
                reason: format!("no string in column {:?}", fields.text),
            }),
        }
    }
    Ok(())
}

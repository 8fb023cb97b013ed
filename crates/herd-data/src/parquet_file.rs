//! Parquet tables (how FineWeb, RedPajama and most Hub data sets are published): one document
//! per row, its text, URL and date from the columns [`Fields`] names. Only those columns are
//! decoded (a projection), row group after row group, so memory stays at one row group's pages.
//! Read with the `parquet` crate's row API (no Arrow); snappy, zstd, lz4 and gzip pages.
//!
//! A row whose text is null or not a string is a bad record (`file#row`); a timestamp or date
//! column is turned into text (`2023-01-02 03:04:05.000 +00:00`) that orders like the times.

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
    let reader = SerializedFileReader::new(file).map_err(corrupt)?;
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
    for (n, row) in reader
        .get_row_iter(Some(projection))
        .map_err(corrupt)?
        .enumerate()
    {
        let row = row.map_err(corrupt)?;
        let at = format!("{}#{n}", path.display());
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

//! Errors of herd-data: every one names the file (and record) it is about.

use std::path::{Path, PathBuf};

/// An error reading or writing data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The OS refused a read or write.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file's content is not what it should be.
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    /// Tokenizing failed.
    #[error(transparent)]
    Tokenizer(#[from] herd_tokenizer::Error),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A content error in `path`.
    pub fn format(path: &Path, message: impl Into<String>) -> Error {
        Error::Format {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// herd-data's result type.
pub type Result<T> = std::result::Result<T, Error>;

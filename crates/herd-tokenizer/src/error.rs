//! Errors of tokenizer loading and chat formatting.

use std::path::PathBuf;

/// What went wrong while loading a tokenizer or formatting a chat.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not a valid tokenizer (the message says where).
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    /// A token id outside the vocabulary.
    #[error("token id {0} is not in the vocabulary")]
    UnknownId(u32),
    /// Anything else, described.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// An [`Error::Format`] for `path`.
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Error {
        Error::Format {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Result of tokenizer operations.
pub type Result<T> = std::result::Result<T, Error>;

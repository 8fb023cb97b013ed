//! Errors of tokenizer loading and chat formatting.

use std::path::PathBuf;

pub use herd_util::FileError;

/// What went wrong while loading a tokenizer or formatting a chat.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read, or is not a valid tokenizer (the message says where).
    #[error(transparent)]
    File(#[from] FileError),
    /// A token id outside the vocabulary.
    #[error("token id {0} is not in the vocabulary")]
    UnknownId(u32),
    /// Anything else, described.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// A content error in `path` ([`FileError::Format`]).
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Error {
        Error::File(FileError::format(path.into(), message))
    }

    /// An I/O error on `path` ([`FileError::Io`]).
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::File(FileError::io(path.into(), source))
    }
}

/// Result of tokenizer operations.
pub type Result<T> = std::result::Result<T, Error>;

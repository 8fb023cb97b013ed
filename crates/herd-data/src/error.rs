//! Errors of herd-data: every one names the file (and record) it is about.

use std::path::Path;

pub use herd_util::FileError;

/// An error reading or writing data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The OS refused a read or write, the file's content is not what it should be, or a
    /// setting makes no sense.
    #[error(transparent)]
    File(#[from] FileError),
    /// Tokenizing failed.
    #[cfg(feature = "curation")]
    #[error(transparent)]
    Tokenizer(#[from] herd_tokenizer::Error),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Error {
        Error::File(FileError::io(path, source))
    }

    /// A content error in `path`.
    pub fn format(path: &Path, message: impl Into<String>) -> Error {
        Error::File(FileError::format(path, message))
    }
}

/// herd-data's result type.
pub type Result<T> = std::result::Result<T, Error>;

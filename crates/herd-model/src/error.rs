//! Errors of model loading and saving: each names the file and, where there is one, the tensor.

use std::path::PathBuf;

pub use herd_util::FileError;

/// What went wrong while reading or writing a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read or written, or is not what it claims to be (bad JSON,
    /// truncated, unknown format).
    #[error(transparent)]
    File(#[from] FileError),
    /// A tensor the model needs is not in the checkpoint.
    #[error(
        "{}: tensor `{}` is missing from the checkpoint",
        herd_util::text::printable_path(path),
        herd_util::text::printable(name)
    )]
    MissingTensor { path: PathBuf, name: String },
    /// A tensor has the wrong shape for the config.
    #[error(
        "{}: tensor `{}` has shape {got:?}, the config needs {expected:?}",
        herd_util::text::printable_path(path),
        herd_util::text::printable(name)
    )]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
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

/// Result of model loading and saving.
pub type Result<T> = std::result::Result<T, Error>;

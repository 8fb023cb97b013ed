//! Errors of model loading and saving: each names the file and, where there is one, the tensor.

use std::path::PathBuf;

/// What went wrong while reading or writing a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not what it claims to be (bad JSON, truncated, unknown format).
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    /// A tensor the model needs is not in the checkpoint.
    #[error("{path}: tensor `{name}` is missing from the checkpoint")]
    MissingTensor { path: PathBuf, name: String },
    /// A tensor has the wrong shape for the config.
    #[error("{path}: tensor `{name}` has shape {got:?}, the config needs {expected:?}")]
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
    /// A [`Error::Format`] for `path`.
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Error {
        Error::Format {
            path: path.into(),
            message: message.into(),
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result of model loading and saving.
pub type Result<T> = std::result::Result<T, Error>;

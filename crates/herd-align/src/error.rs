//! Errors of post-training.

use thiserror::Error;

/// What can go wrong in post-training.
#[derive(Debug, Error)]
pub enum Error {
    /// The training machinery (checkpoints, optimizer, tensors) failed.
    #[error(transparent)]
    Train(#[from] herd_train::Error),
    /// A text could not be tokenized or formatted as a dialog.
    #[error(transparent)]
    Tokenizer(#[from] herd_tokenizer::Error),
    /// A data file could not be read.
    #[error(transparent)]
    Data(#[from] herd_data::Error),
    /// A model could not be read or built.
    #[error(transparent)]
    Model(#[from] herd_model::Error),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Generation failed.
    #[error("sampling: {0}")]
    Sampling(String),
    /// A post-training recipe is malformed.
    #[error("recipe {path}: {message}")]
    Recipe {
        /// The recipe file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The inputs do not allow the stage to run (no pairs, a missing head).
    #[error("{0}")]
    Invalid(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl Error {
    /// An I/O error naming `path`.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Post-training's result type.
pub type Result<T> = std::result::Result<T, Error>;

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
    /// A file could not be read or written, or a setting makes no sense.
    #[error(transparent)]
    File(#[from] herd_util::FileError),
}

impl Error {
    /// An I/O error naming `path`.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Error {
        Error::File(herd_util::FileError::io(path, source))
    }
}

/// Post-training's result type.
pub type Result<T> = std::result::Result<T, Error>;

//! Errors of training: each says what to fix (the recipe key, the checkpoint file, the data).

/// An error of a training run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The model or a checkpoint could not be built or read.
    #[error(transparent)]
    Model(#[from] herd_model::Error),
    /// Token shards could not be read.
    #[error(transparent)]
    Shards(#[from] herd_data::Error),
    /// The data do not fit the recipe.
    #[error("data: {0}")]
    Data(String),
    /// The recipe is malformed or inconsistent.
    #[error("recipe {path}: {message}")]
    Recipe { path: String, message: String },
    /// A checkpoint is missing something or does not match the run.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The processes that share each step could not exchange what they compute, or one of
    /// them failed.
    #[error("processes sharing the run: {0}")]
    Sharing(String),
    /// Training diverged.
    #[error("{0}")]
    Diverged(String),
    /// A file could not be read or written, or a setting makes no sense.
    #[error(transparent)]
    File(#[from] herd_util::FileError),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Error {
        Error::File(herd_util::FileError::io(path, source))
    }
}

/// herd-train's result type.
pub type Result<T> = std::result::Result<T, Error>;

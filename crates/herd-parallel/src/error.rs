//! Errors of parallel runs: each names the setting or the operation and what was wrong.

/// An error of a parallel layout or a collective.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `[parallel]` degrees do not fit the world.
    #[error("parallel layout: {0}")]
    Layout(String),
    /// A collective was called with buffers that cannot hold its result.
    #[error("{op}: {message}")]
    Collective {
        /// The collective (`all_reduce_sum`, …).
        op: &'static str,
        /// What did not fit.
        message: String,
    },
    /// A supervised job could not be started or failed beyond its restarts.
    #[error("launch: {0}")]
    Launch(String),
}

/// herd-parallel's result type.
pub type Result<T> = std::result::Result<T, Error>;

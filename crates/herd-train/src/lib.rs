//! herd-train: pretraining with the Llama 3 recipe (paper §3.4).
//!
//! [`loader`] packs documents from token shards into rows with document boundaries,
//! [`params`] holds the trainable tensors, [`loss`] the next-token loss, [`adamw`] and
//! [`schedule`] the optimizer and its learning rate and batch stages.

pub mod adamw;
pub mod error;
pub mod loader;
pub mod loss;
pub mod params;
pub mod schedule;

pub use error::{Error, Result};

//! herd-train: pretraining with the Llama 3 recipe (paper §3.4).
//!
//! [`loader`] packs documents from token shards into rows with document boundaries,
//! [`params`] holds the trainable tensors, [`loss`] the next-token loss, [`adamw`] and
//! [`schedule`] the optimizer and its learning rate and batch stages, [`step`] one step's
//! arithmetic, [`sharing`] how processes share a step, [`pipeline`] the 1F1B schedule of a
//! model cut into stages; [`trainer`] runs a [`recipe`] with
//! [`checkpoint`]s, [`metrics`] and the final [`average`].

pub mod adamw;
pub mod average;
pub mod checkpoint;
pub mod error;
pub mod loader;
pub mod loss;
pub mod metrics;
pub mod params;
pub mod pipeline;
pub mod recipe;
pub mod schedule;
pub mod sharing;
pub mod step;
pub mod trainer;

pub use error::{Error, Result};
pub use recipe::{ParallelSection, Recipe};
pub use trainer::{pretrain, pretrain_shared, ModelSplit, RunOptions, RunSummary, SharingFactory};

//! herd-eval: evaluating models as lm-evaluation-harness does, on the same task files.
//!
//! A task file ([`config`]) names its data ([`data`]) and says how a document becomes a prompt
//! ([`template`], [`task`]); the model answers log-likelihood, rolling log-likelihood and
//! generation requests ([`model`]); answers are filtered and scored ([`evaluate`],
//! [`metrics`]) and reported in the harness's results JSON and table ([`results`]), on clean
//! and contaminated items apart when a pretraining corpus is given ([`contamination`]).
//! [`needles`] hides facts in long texts to find where a model's context stops serving it. Few-shot
//! draws and bootstrapped errors use CPython's generator ([`pyrandom`]), so prompts and numbers
//! are the harness's own.

pub mod builtin;
pub mod config;
pub mod contamination;
pub mod data;
pub mod evaluate;
pub mod literal;
pub mod metrics;
pub mod model;
pub mod needles;
pub mod pyrandom;
pub mod results;
pub mod sandbox;
pub mod scaling;
pub mod task;
pub mod template;

pub use config::{OutputType, TaskConfig};
pub use evaluate::{evaluate, EvalOptions, TaskResult};
pub use model::EvalModel;
pub use task::Task;

//! herd-align: post-training as the paper does it (§4): SFT, a reward model, rejection
//! sampling and DPO in rounds, and checkpoint averaging.
//!
//! [`conversation`] reads the common conversation and preference formats into Llama 3.1
//! messages and [`dataset`] collects, tokenizes and splits them; [`masks`] gives them their SFT
//! and DPO loss masks and [`pack`] packs them into rows. Each stage is an objective for the
//! shared loop of [`fit`]: [`sft`], [`reward`] (the reward model), [`dpo`] with
//! [`dpo_training`]; [`rejection`] samples and keeps the best responses. [`stages`] runs each
//! as a job and [`rounds`] chains them as a `recipes/posttrain-*.toml` says.

pub mod conversation;
pub mod dataset;
pub mod dpo;
pub mod dpo_training;
pub mod error;
pub mod fit;
pub mod masks;
pub mod pack;
pub mod rejection;
pub mod reward;
pub mod rounds;
pub mod sft;
pub mod stages;

pub use error::{Error, Result};

//! herd-model: the Llama 3 model of *The Llama 3 Herd of Models* on candle.
//!
//! Configs and presets ([`config`]), the Transformer read top to bottom like the paper
//! ([`rope`], [`attention`], [`feed_forward`], [`block`], [`llama`]), and the checkpoint adapters
//! that bring HF safetensors, GGUF and Meta `.pth` weights into one layout ([`checkpoint`]).

pub mod attention;
pub mod block;
pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod embedding;
pub mod error;
pub mod feed_forward;
pub mod kernel;
pub mod linear;
pub mod llama;
pub mod norm;
pub mod paged;
pub mod quantized;
pub mod rope;
pub mod seeded_weights;
pub mod sequence;
pub mod softmax;
pub mod split;
pub mod stage;
pub mod trace;
pub mod weights;

pub use cache::KvCache;
pub use config::{LlamaConfig, RopeScaling};
pub use error::{Error, Result};
pub use llama::Llama;
pub use paged::{PagedKv, PagedSeq};
pub use sequence::{context_columns, SequenceLayout};
pub use weights::{Weight, Weights};

//! herd-infer: running herd models. Loading a model path with its tokenizer ([`loader`]),
//! sampling ([`sampling`]), generation on the paged KV cache ([`generate`]), the serving engine ([`engine`]) and its
//! block manager ([`blocks`]), scoring ([`score`]),
//! perplexity as llama.cpp computes it ([`perplexity`]) and speed measurement ([`bench`]).

pub mod batch;
pub mod bench;
pub mod blocks;
pub mod engine;
pub mod generate;
pub mod loader;
pub mod perplexity;
pub mod sampling;
pub mod score;

pub use generate::{FinishReason, GenerateConfig, GeneratedToken, Generation, Session};
pub use loader::{load, LoadedModel, Quantized};
pub use sampling::{Sampler, SamplingConfig};

//! herd-tokenizer: the tokenizers and chat formats of the models herd runs.
//!
//! Meta's Llama 3 tokenizer ([`llama3`], tiktoken BPE over [`tiktoken`] rank files), byte-level
//! BPE from HF `tokenizer.json` or a GGUF's vocabulary ([`byte_level`]), one [`Tokenizer`] over
//! both, and chat formats ([`chat`]): Llama 3.1 dialogs with tool calls, and HF Jinja templates.

pub mod byte_level;
pub mod chat;
pub mod error;
pub mod hf_files;
pub mod llama3;
pub mod tiktoken;
pub mod tokenizer;
pub mod train;

pub use error::{Error, Result};
pub use tokenizer::{GgufTokenizerInfo, StreamDecoder, Tokenizer};

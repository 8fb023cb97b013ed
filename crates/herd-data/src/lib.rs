//! herd-data: curation of pretraining data (paper §3.1) and the token-shard format that
//! pretraining reads.
//!
//! [`reader`] turns files into documents, [`tokenize`] turns documents into token
//! [`shard`]s.

pub mod error;
pub mod fasttext;
pub mod langid;
pub mod reader;
pub mod shard;
pub mod tokenize;

pub use error::{Error, Result};
pub use shard::{Shard, ShardWriter};

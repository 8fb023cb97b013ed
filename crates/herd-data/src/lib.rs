//! herd-data: curation of pretraining data (paper §3.1) and the token-shard format that
//! pretraining reads.
//!
//! [`reader`] turns files into documents, [`tokenize`] turns documents into token
//! [`shard`]s. The curation stages: [`filters`] (Gopher quality and repetition rules, dirty
//! words), [`pii`] redaction, [`gutenberg`] boilerplate, [`langid`] (fastText models read by
//! [`fasttext`]), and de-duplication by [`minhash`] and by line ([`line_dedup`]).

pub mod classifier;
pub mod error;
pub mod extract;
pub mod fasttext;
pub mod filters;
pub mod gutenberg;
pub mod langid;
pub mod line_dedup;
pub mod minhash;
pub mod parquet_file;
pub mod pii;
pub mod pipeline;
pub mod reader;
pub mod shard;
pub mod token_kl;
pub mod tokenize;
pub mod url_dedup;
pub mod url_filter;
pub mod warc;

pub use error::{Error, Result};
pub use shard::{Shard, ShardWriter};

//! herd-data: curation of pretraining data (paper §3.1) and the token-shard format that
//! pretraining reads.
//!
//! [`reader`] turns files into documents, [`tokenize`] turns documents into token
//! [`shard`]s. The curation stages: [`filters`] (Gopher quality and repetition rules, dirty
//! words), [`pii`] redaction, [`gutenberg`] boilerplate, [`langid`] (fastText models read by
//! [`fasttext`]), and de-duplication by [`minhash`] and by line ([`line_dedup`]).

#[cfg(feature = "curation")]
pub mod charset;
#[cfg(feature = "curation")]
pub mod classifier;
pub mod error;
#[cfg(feature = "curation")]
pub mod extract;
#[cfg(feature = "curation")]
pub mod fasttext;
#[cfg(feature = "curation")]
pub mod filters;
#[cfg(feature = "curation")]
pub mod gutenberg;
#[cfg(feature = "curation")]
pub mod langid;
#[cfg(feature = "curation")]
pub mod line_dedup;
#[cfg(feature = "curation")]
pub mod minhash;
#[cfg(feature = "curation")]
pub mod parquet_file;
#[cfg(feature = "curation")]
pub mod pii;
#[cfg(feature = "curation")]
pub mod pipeline;
#[cfg(feature = "curation")]
pub mod reader;
pub mod shard;
#[cfg(feature = "curation")]
pub mod token_kl;
#[cfg(feature = "curation")]
pub mod tokenize;
#[cfg(feature = "curation")]
pub mod url_dedup;
#[cfg(feature = "curation")]
pub mod url_filter;
#[cfg(feature = "curation")]
pub mod warc;

pub use error::{Error, Result};
pub use shard::{Shard, ShardWriter};

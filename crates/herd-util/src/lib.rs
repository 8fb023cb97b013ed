//! herd-util: the small things every herd crate shares, kept in one place.
//!
//! - [`seeded`]: splitmix64, FNV-1a and the shuffles everything deterministic is drawn from;
//! - [`fs`]: atomic writes and output folders that are never silently mixed with an older run's;
//! - [`fingerprint`]: content hashes that say whether a resumed run still has the same inputs;
//! - [`assets`]: where `herd fetch` keeps downloaded files;
//! - [`error`]: the file errors (I/O, bad content, bad setting) every crate's errors wrap;
//! - [`check`]: validation of numeric settings, with the key and its file in the message;
//! - [`records`]: JSON records (`.jsonl`, `.json` arrays; gzip or zstd) with their positions,
//!   a truncated or corrupt stream counted as a bad record rather than ending the run;
//! - [`text`]: names from files made safe to print;
//! - with the `testing` feature, [`testing`] (the one way a test skips), [`fuzz`] (a seeded
//!   mutation fuzzer over real files) and [`mpirun`] (how MPI tests start their jobs).

pub mod assets;
pub mod check;
pub mod error;
pub mod fingerprint;
pub mod fs;
#[cfg(feature = "testing")]
pub mod fuzz;
#[cfg(feature = "testing")]
pub mod mpirun;
pub mod records;
pub mod seeded;
#[cfg(feature = "testing")]
pub mod testing;
pub mod text;

pub use error::{FileError, Result};

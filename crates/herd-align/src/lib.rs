//! herd-align: post-training as the paper does it (§4): SFT, a reward model, rejection
//! sampling and DPO in rounds, and checkpoint averaging.
//!
//! [`conversation`] reads the common conversation and preference formats into Llama 3.1
//! messages; [`records`] reads the files they come in.

pub mod conversation;
pub mod dpo;
pub mod masks;
pub mod records;

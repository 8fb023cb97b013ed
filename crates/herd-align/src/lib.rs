//! herd-align: post-training as the paper does it (§4): SFT, a reward model, rejection
//! sampling and DPO in rounds, and checkpoint averaging.
//!
//! [`conversation`] reads the common conversation and preference formats into Llama 3.1
//! messages (the files come through `herd_data::reader::read_records`); [`masks`] gives them
//! their SFT and DPO loss masks; [`dpo`] is the DPO objective.

pub mod conversation;
pub mod dpo;
pub mod masks;

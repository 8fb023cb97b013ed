//! Scaling laws as the paper finds them (§3.2.1): an IsoFLOP sweep of small pretraining runs,
//! the compute-optimal model size per budget, its power law, and the two-step prediction of a
//! downstream task's accuracy from compute.

pub mod analysis;
pub mod fit;
pub mod sweep;

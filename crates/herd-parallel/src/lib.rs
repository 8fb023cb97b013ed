//! Parallel training (paper §3.3): the collectives ranks use to exchange tensors, the layout
//! that orders ranks as [TP, CP, PP, DP] and names each rank's groups, and the parallel plans —
//! tensor and context parallelism ([`parts`]: the model's layers or its sequences split over a
//! group) and pipeline parallelism ([`stages`]: its blocks cut into stages on the 1F1B schedule)
//! inside [`DataParallel`] (data parallelism with sharded optimizer state) — and [`launch`], which
//! runs a recipe under its `[parallel]` section, and [`supervisor`], which restarts a job that
//! lost a rank from its last checkpoint.
//!
//! The model and the trainer never learn about ranks: the parallel plans wrap them from outside,
//! as torchtitan's `parallelize` does — the trainer through its `StepSharing` seam, the model
//! through its split layers (`herd_model::split`) and stages (`herd_model::stage`) — over the
//! [`Collectives`] trait. Two implementations:
//! [`SingleProcess`] (a world of one, what `herd pretrain` runs without MPI) and, with the `mpi`
//! feature, [`mpi::MpiWorld`] over the system's MPI library (rsmpi) — N processes on one machine
//! today, N nodes tomorrow, the same code. Under MPI every call runs under a watchdog that turns
//! a hang into an exit with each rank's [`recorder`] (its last calls) on disk.

pub mod collectives;
pub mod data_parallel;
pub mod error;
pub mod launch;
pub mod layout;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod parts;
pub mod recorder;
pub mod stages;
pub mod supervisor;
pub mod volume;

pub use collectives::{check_lengths, Collectives, SingleProcess};
pub use data_parallel::DataParallel;
pub use error::{Error, Result};
pub use layout::{Coords, Dim, Layout};
pub use parts::GroupParts;
pub use stages::GroupStages;

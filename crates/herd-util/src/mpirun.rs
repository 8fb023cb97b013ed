//! The `mpirun` command line herd's MPI tests start their jobs with, in one place: every rank
//! on this machine whatever its cores (`--oversubscribe`, no binding), and the settings Open MPI
//! needs in CI's containers — as root it wants both `OMPI_ALLOW_RUN_AS_ROOT` variables, and
//! without ptrace rights its shared-memory transport must not use single-copy (cross-memory
//! attach).

use std::process::Command;

/// The flags for `mpirun` that put every rank on this machine.
pub const FLAGS: [&str; 3] = ["--oversubscribe", "--bind-to", "none"];

/// The environment Open MPI needs in CI's containers.
pub const ENVIRONMENT: [(&str, &str); 3] = [
    ("OMPI_ALLOW_RUN_AS_ROOT", "1"),
    ("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"),
    ("OMPI_MCA_btl_vader_single_copy_mechanism", "none"),
];

/// `mpirun -n ranks` with the flags and environment above; the caller adds its own and the
/// program.
pub fn mpirun(ranks: usize) -> Command {
    let mut command = Command::new("mpirun");
    command
        .args(["-n", &ranks.to_string()])
        .args(FLAGS)
        .envs(ENVIRONMENT);
    command
}

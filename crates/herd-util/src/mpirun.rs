//! The `mpirun` command line herd's MPI tests start their jobs with, in one place: every rank
//! on this machine whatever its cores (`--oversubscribe`, no binding), and the settings Open MPI
//! needs in CI's containers — as root it wants both `OMPI_ALLOW_RUN_AS_ROOT` variables, and
//! without ptrace rights its shared-memory transport must not use single-copy (cross-memory
//! attach).

use std::process::Command;

/// `mpirun -n ranks` with the flags above; the caller adds its own and the program.
pub fn mpirun(ranks: usize) -> Command {
    let mut command = Command::new("mpirun");
    command
        .args([
            "-n",
            &ranks.to_string(),
            "--oversubscribe",
            "--bind-to",
            "none",
        ])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    command
}

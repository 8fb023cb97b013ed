//! herd-parallel's collectives over real MPI. `cargo test --features mpi` starts this program;
//! it starts itself again under `mpirun` (2, 3 and 4 ranks), and each rank checks the world's
//! collectives — and with 4 ranks those of every group of the layouts tp 2 × dp 2 and
//! tp 2 × pp 2 — against sums worked out by hand, and that each group holds exactly the ranks
//! the layout names.

use std::process::{Command, ExitCode};

use herd_parallel::collectives::self_check;
use herd_parallel::mpi::{MpiGroup, MpiWorld};
use herd_parallel::{Collectives, Dim, Layout};

fn main() -> ExitCode {
    if std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some() {
        return rank_main();
    }
    let exe = std::env::current_exe().expect("the test's own path");
    let mut passed = 0;
    for ranks in [2, 3, 4] {
        let output = Command::new("mpirun")
            .args([
                "-n",
                &ranks.to_string(),
                "--oversubscribe",
                "--bind-to",
                "none",
            ])
            .arg(&exe)
            // As root (CI's containers) Open MPI wants both; without ptrace rights its
            // shared-memory transport must not use single-copy (cross-memory attach).
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
            .output()
            .expect("mpirun (Debian: openmpi-bin) must be on PATH for the mpi feature's tests");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "mpirun -n {ranks}: {}\n{stdout}\n{stderr}",
            output.status
        );
        let ok = stdout.lines().filter(|l| l.starts_with("ok ")).count();
        let want = if ranks == 4 { 8 } else { 1 } * ranks;
        assert_eq!(ok, want, "mpirun -n {ranks}:\n{stdout}\n{stderr}");
        println!("mpirun -n {ranks}: every rank's collectives agree with the sums by hand");
        passed += 1;
    }
    println!("{passed} passed, 0 failed");
    ExitCode::SUCCESS
}

/// One rank's checks; prints `ok <what> <rank>` per passing check, exits non-zero on a failure.
fn rank_main() -> ExitCode {
    let mpi = MpiWorld::init().expect("MPI starts");
    let failures = {
        let world = mpi.world();
        let mut failures = Vec::new();
        let mut check = |what: &str, result: Result<(), String>| match result {
            Ok(()) => println!("ok {what} {}", world.rank()),
            Err(e) => failures.push(format!("rank {}: {what}: {e}", world.rank())),
        };
        check("world", self_check(&world));
        if world.size() == 4 {
            let (tp_dp, tp_pp) = (
                Layout::new(2, 1, 1, 2, 4).unwrap(),
                Layout::new(2, 1, 2, 1, 4).unwrap(),
            );
            for (layout, dim) in [
                (tp_dp, Dim::Tensor),
                (tp_dp, Dim::Data),
                (tp_pp, Dim::Pipeline),
            ] {
                let group = world.split(&layout, dim).expect("the layout fits");
                let what = format!("{dim:?}");
                check(&what, self_check(&group));
                check(&what, members(&group, &world, &layout, dim));
            }
            // A length mismatch is refused on every rank before anything is sent, so no rank
            // waits in a collective the others never join.
            let refused = world.reduce_scatter_sum(&[1.0; 6], &mut [0.0; 2]);
            check(
                "mismatch",
                match refused {
                    Err(e) if e.to_string().contains("4 ranks × 2") => Ok(()),
                    other => Err(format!("{other:?}")),
                },
            );
        }
        world.barrier().expect("barrier");
        failures
    };
    drop(mpi);
    for failure in &failures {
        eprintln!("FAILED {failure}");
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The group's members, gathered as world ranks, are the layout's group in order.
fn members(
    group: &MpiGroup<'_>,
    world: &MpiGroup<'_>,
    layout: &Layout,
    dim: Dim,
) -> Result<(), String> {
    let mut gathered = vec![0.0; group.size()];
    group
        .all_gather(&[world.rank() as f32], &mut gathered)
        .map_err(|e| e.to_string())?;
    let want: Vec<f32> = layout
        .group(world.rank(), dim)
        .iter()
        .map(|&r| r as f32)
        .collect();
    if gathered != want {
        return Err(format!("members {gathered:?}, want {want:?}"));
    }
    Ok(())
}

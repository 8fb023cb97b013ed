//! herd-parallel's collectives over real MPI. `cargo test --features mpi` starts this program;
//! it starts itself again under `mpirun`, and each rank runs one case:
//! - `sums` (2, 3 and 4 ranks): the world's collectives — and with 4 ranks those of every group
//!   of the layouts tp 2 × dp 2 and tp 2 × pp 2 — against sums worked out by hand, and each group
//!   holding exactly the ranks the layout names;
//! - `hang` (2 ranks): rank 1 never joins rank 0's all-reduce and waits for a message that never
//!   comes; rank 0's 2-second watchdog must end the job, rank 1 must see mpirun end it, and both
//!   flight recorders must name the call each rank was waiting in.
//!
//! Data-parallel training through these collectives is tested where users meet it, as
//! `mpirun -n 2 herd pretrain` (crates/herd/tests/pretrain_mpi.rs).

use std::path::Path;
use std::process::{ExitCode, Output};
use std::time::{Duration, Instant};

use herd_parallel::collectives::self_check;
use herd_parallel::mpi::{MpiGroup, MpiWorld, Watchdog};
use herd_parallel::recorder::dump_path;
use herd_parallel::{Collectives, Dim, Layout};

/// The environment variables that tell a rank its case and the folder of its recorder.
const CASE: &str = "HERD_MPI_TEST_CASE";
const DUMPS: &str = "HERD_MPI_TEST_DUMPS";

fn main() -> ExitCode {
    if std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some() {
        return rank_main();
    }
    let folder = tempfile::tempdir().expect("a temporary folder");
    let dumps = folder.path();
    let mut passed = 0;
    for ranks in [2, 3, 4] {
        let output = mpirun(ranks, "sums", dumps);
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
    hang_ends_the_job_with_recorders(dumps);
    passed += 1;
    println!("{passed} passed, 0 failed");
    ExitCode::SUCCESS
}

/// Runs this program as `ranks` ranks of case `case`.
fn mpirun(ranks: usize, case: &str, dumps: &Path) -> Output {
    let exe = std::env::current_exe().expect("the test's own path");
    herd_util::mpirun::mpirun(ranks)
        .arg(&exe)
        .env(CASE, case)
        .env(DUMPS, dumps)
        .output()
        .expect("mpirun (Debian: openmpi-bin) must be on PATH for the mpi feature's tests")
}

fn hang_ends_the_job_with_recorders(dumps: &Path) {
    let started = Instant::now();
    let output = mpirun(2, "hang", dumps);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a hung job reported success");
    assert!(took < Duration::from_secs(60), "the hung job took {took:?}");
    assert!(stderr.contains("did not complete within 2s"), "{stderr}");
    let recorder = |rank: usize| -> serde_json::Value {
        let path = dump_path(dumps, rank);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}\n{stderr}", path.display()));
        serde_json::from_str(&text).expect("a recorder is JSON")
    };
    let (first, second) = (recorder(0), recorder(1));
    assert_eq!(first["reason"], "timeout");
    let waiting = |r: &serde_json::Value| r["calls"].as_array().unwrap().last().unwrap().clone();
    let (a, b) = (waiting(&first), waiting(&second));
    assert_eq!(
        (a["op"].as_str(), a["group"].as_str()),
        (Some("all_reduce_sum"), Some("world"))
    );
    assert!(a["took_s"].is_null(), "{a}");
    assert!(
        second["reason"]
            .as_str()
            .unwrap()
            .contains("ended by mpirun"),
        "{second}"
    );
    assert_eq!(
        (b["op"].as_str(), b["peer"].as_u64(), b["tag"].as_u64()),
        (Some("receive"), Some(0), Some(99))
    );
    assert!(b["took_s"].is_null(), "{b}");
    // The calls before the hang completed and say so.
    assert!(first["calls"][0]["took_s"].is_number(), "{first}");
    println!(
        "mpirun -n 2 with a lost rank: ended in {took:.1?}, both recorders name the waiting call"
    );
}

/// One rank's case; prints `ok <what> <rank>` per passing check, exits non-zero on a failure.
fn rank_main() -> ExitCode {
    let case = std::env::var(CASE).expect("the launcher names the case");
    let dump_dir = std::env::var_os(DUMPS)
        .expect("the launcher names the folder")
        .into();
    // In the hang case only rank 0's watchdog fires; rank 1 is ended by mpirun as it waits.
    let rank = std::env::var("OMPI_COMM_WORLD_RANK").expect("mpirun numbers the ranks");
    let timeout = Duration::from_secs(match (case.as_str(), rank.as_str()) {
        ("hang", "0") => 2,
        _ => 120,
    });
    let mpi = MpiWorld::init(Watchdog { timeout, dump_dir }).expect("MPI starts");
    if case == "hang" {
        let world = mpi.world();
        world.barrier().expect("both ranks reach the first barrier");
        if world.rank() == 0 {
            let _ = world.all_reduce_sum(&mut [1.0; 4]);
        } else {
            let _ = world.receive(0, &mut [0.0; 4], 99);
        }
        unreachable!("the watchdog ends the job");
    }
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

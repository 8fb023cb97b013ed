//! herd-parallel's collectives over real MPI. `cargo test --features mpi` starts this program;
//! it starts itself again under `mpirun`, and each rank runs one case:
//! - `sums` (2, 3 and 4 ranks): the world's collectives — and with 4 ranks those of every group
//!   of the layouts tp 2 × dp 2 and tp 2 × pp 2 — against sums worked out by hand, and each group
//!   holding exactly the ranks the layout names;
//! - `hang` (2 ranks): rank 1 never joins rank 0's all-reduce and waits for a message that never
//!   comes; rank 0's 2-second watchdog must end the job, rank 1 must see mpirun end it, and both
//!   flight recorders must name the call each rank was waiting in;
//! - `train` (2 ranks, DP 2): 20 steps of a small Llama pretraining recipe with data parallelism
//!   and sharded optimizer state must give the single-process run's loss at every step and its
//!   final weights within 1e-5; a DP 2 run stopped at step 8 and resumed in one process must end
//!   where the single-process run ends.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output};
use std::time::{Duration, Instant};

use herd_parallel::collectives::self_check;
use herd_parallel::mpi::{MpiGroup, MpiWorld, Watchdog};
use herd_parallel::recorder::dump_path;
use herd_parallel::{Collectives, DataParallel, Dim, Layout};
use herd_train::{pretrain, pretrain_shared, Recipe, RunOptions};

/// The environment variables that tell a rank its case, its folder (recorders; the training
/// case's recipe and runs) and, for training, its run's folder name and last step.
const CASE: &str = "HERD_MPI_TEST_CASE";
const DUMPS: &str = "HERD_MPI_TEST_DUMPS";
const RUN: &str = "HERD_MPI_TEST_RUN";
const STOP: &str = "HERD_MPI_TEST_STOP";

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
    data_parallel_training_equals_one_process(dumps);
    passed += 1;
    println!("{passed} passed, 0 failed");
    ExitCode::SUCCESS
}

/// Runs this program as `ranks` ranks of case `case`.
fn mpirun(ranks: usize, case: &str, dumps: &Path) -> Output {
    mpirun_with(ranks, case, dumps, &[])
}

fn mpirun_with(ranks: usize, case: &str, dumps: &Path, env: &[(&str, &str)]) -> Output {
    let exe = std::env::current_exe().expect("the test's own path");
    Command::new("mpirun")
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
        .env(CASE, case)
        .env(DUMPS, dumps)
        .envs(env.iter().copied())
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
    if case == "train" {
        return train_rank(&mpi);
    }
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

/// A 768-id vocabulary and token shards of seeded made-up sentences, and the recipe, in `dir`.
fn training_recipe(dir: &Path) -> Recipe {
    let words = [
        "the", "herd", "of", "llamas", "walks", "over", "a", "green", "hill", "and", "rests",
        "near", "river", "where", "old", "trees", "grow", "slowly", "in", "summer", "light",
    ];
    let mut state = 7u64;
    let docs: Vec<String> = (0..400)
        .map(|_| {
            (0..60)
                .map(|_| {
                    let draw = herd_util::seeded::splitmix64(&mut state);
                    words[(draw % words.len() as u64) as usize]
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let ranks = herd_tokenizer::train::train_ranks(docs.iter(), 768, 2).unwrap();
    let tokenizer_path = dir.join("tokenizer.model");
    std::fs::write(
        &tokenizer_path,
        herd_tokenizer::train::ranks_file_text(&ranks),
    )
    .unwrap();
    let jsonl: String = docs
        .iter()
        .map(|d| serde_json::json!({ "text": d }).to_string() + "\n")
        .collect();
    std::fs::write(dir.join("docs.jsonl"), jsonl).unwrap();
    let tokenizer = herd_tokenizer::Tokenizer::llama3(&tokenizer_path).unwrap();
    let options = herd_data::tokenize::TokenizeOptions {
        field: "text",
        shard_tokens: 20_000,
        split_chars: None,
        progress: &|_, _, _| {},
    };
    let files = [dir.join("docs.jsonl")];
    herd_data::tokenize::tokenize_files(&files, &tokenizer, &dir.join("shards"), &options).unwrap();
    let text = RECIPE.replace("{root}", &dir.display().to_string());
    let path = dir.join("recipe.toml");
    std::fs::write(&path, text).unwrap();
    Recipe::load(&path).unwrap()
}

/// Two stages of 8 rows (4 per rank), micro-batches of 4, annealing averaged at the end.
const RECIPE: &str = r#"
name = "dp-test"
seed = 11
tokenizer = "{root}/tokenizer.model"
[model]
vocab_size = 768
dim = 64
n_layers = 2
n_heads = 4
n_kv_heads = 2
head_dim = 16
ffn_dim = 192
norm_eps = 1e-5
rope_theta = 500000.0
max_seq_len = 64
tie_embeddings = false
[data]
validation_fraction = 0.1
[[data.sources]]
name = "words"
shards = "{root}/shards"
weight = 1.0
[optimizer]
peak_lr = 3e-3
min_lr = 3e-4
warmup_steps = 4
beta1 = 0.9
beta2 = 0.95
eps = 1e-8
weight_decay = 0.1
grad_clip = 1.0
[training]
total_steps = 20
micro_batch_rows = 4
[[training.stages]]
until_step = 10
seq_len = 32
batch_rows = 8
[[training.stages]]
until_step = 20
seq_len = 64
batch_rows = 8
[anneal]
steps = 4
checkpoint_every = 2
average_last = 2
mix = { words = 1.0 }
[checkpoint]
every = 4
keep_last = 2
[eval]
every = 10
rows = 8
"#;

/// One rank of a data-parallel run of the recipe in its folder.
fn train_rank(mpi: &MpiWorld) -> ExitCode {
    let dir = PathBuf::from(std::env::var_os(DUMPS).expect("the folder"));
    let run = std::env::var(RUN).expect("the run's name");
    let stop = std::env::var(STOP).ok().map(|s| s.parse().expect("a step"));
    let recipe = Recipe::load(&dir.join("recipe.toml")).expect("the launcher wrote it");
    let world = mpi.world();
    let options = RunOptions {
        out: dir.join(run),
        max_steps: stop,
        resume: false,
        overwrite: false,
        progress: false,
    };
    let summary = pretrain_shared(&recipe, &options, &|params, config| {
        Ok(Box::new(DataParallel::new(&world, params, config)?))
    });
    match summary {
        Ok(s) => {
            println!("ok train {} steps {}", world.rank(), s.steps);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("FAILED rank {}: {e}", world.rank());
            ExitCode::FAILURE
        }
    }
}

fn losses(run: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

/// The largest difference between two final models' tensors, relative to the largest value.
fn weight_difference(a: &Path, b: &Path) -> f64 {
    let load = |p: &Path| {
        candle_core::safetensors::load(p.join("final/model.safetensors"), &candle_core::Device::Cpu)
            .unwrap()
    };
    let (a, b) = (load(a), load(b));
    assert_eq!(a.len(), b.len());
    let mut worst = 0.0f64;
    for (name, x) in &a {
        let x: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let y: Vec<f32> = b[name].flatten_all().unwrap().to_vec1().unwrap();
        let scale = x.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
        for (p, q) in x.iter().zip(&y) {
            worst = worst.max(f64::from((p - q).abs() / scale));
        }
    }
    worst
}

fn data_parallel_training_equals_one_process(dir: &Path) {
    let recipe = training_recipe(dir);
    let one = |run: &str, resume: bool| {
        let options = RunOptions {
            out: dir.join(run),
            max_steps: None,
            resume,
            overwrite: false,
            progress: false,
        };
        pretrain(&recipe, &options).unwrap();
    };
    one("single", false);
    let dp = |run: &str, stop: Option<&str>| {
        let mut env = vec![(RUN, run)];
        env.extend(stop.map(|s| (STOP, s)));
        let output = mpirun_with(2, "train", dir, &env);
        assert!(
            output.status.success(),
            "DP 2: {}\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    dp("dp2", None);
    let (losses_dp, weights_dp) = compare(dir, "single", "dp2");
    // Saved under DP 2, resumed in one process.
    dp("resharded", Some("8"));
    one("resharded", true);
    let (losses_resumed, weights_resumed) = compare(dir, "single", "resharded");
    println!(
        "DP 2 over 20 steps: losses within {losses_dp:.1e} of one process, final weights within \
         {weights_dp:.1e}; DP 2 to step 8, then one process: {losses_resumed:.1e} and \
         {weights_resumed:.1e}"
    );
}

/// The largest relative differences of `run`'s step losses and final weights from
/// `reference`'s; each must be within 1e-5.
fn compare(dir: &Path, reference: &str, run: &str) -> (f64, f64) {
    let (a, b) = (losses(&dir.join(reference)), losses(&dir.join(run)));
    assert_eq!((a.len(), b.len()), (20, 20), "{run}");
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / x.abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= 1e-5,
        "{run}: losses differ from {reference}'s by {worst:e}"
    );
    let weights = weight_difference(&dir.join(reference), &dir.join(run));
    assert!(
        weights <= 1e-5,
        "{run}: final weights differ by {weights:e}"
    );
    (worst, weights)
}

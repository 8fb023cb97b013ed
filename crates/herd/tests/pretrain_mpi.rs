//! `herd pretrain` as 2 ranks of `mpirun` with the recipe's `[parallel] dp = 2` (data
//! parallelism, optimizer state sharded), on real text:
//! - its loss at each of 20 steps and its final (annealed, averaged) weights equal one
//!   process's within 1e-5;
//! - each rank writes its own slices of the optimizer state into a checkpoint, which resumes in
//!   one process and ends where that one ends;
//! - under `herd pretrain --launch 2`, a rank killed with -9 mid-run makes the launcher restart
//!   the job from its last checkpoint, and it ends with the uninterrupted run's weights bit for
//!   bit;
//! - the bytes each rank sends per step, as Open MPI's monitoring counts them, are
//!   herd-parallel's formula's;
//! - a rank that cannot open the run ends the job at once with its error, not after the
//!   collective timeout; a recipe that asks for 2 processes refuses to start without a launcher.
//!
//! And with `[parallel] tp = 2` (tensor parallelism: heads, FFN units and vocabulary split),
//! `cp = 2` (context parallelism: each row's tokens split), `tp = 2, dp = 2` and `tp = 2,
//! cp = 2`: losses and final weights equal one process's within 1e-5; a checkpoint of DP 2
//! resumes under TP 2, and one of TP 2 in one process, each ending where one process ends; the
//! bytes each rank sends per step under TP 2 and CP 2 are the formula's.
//!
//! And with `pp = 2` (pipeline parallelism on the 1F1B schedule, 4 micro-batches a step in the
//! first stage of the recipe), `tp = 2, pp = 2, dp = 2` on 8 ranks, and `pp = 2,
//! virtual_stages = 2` (the interleaved schedule, on a 6-layer model): the same; a checkpoint of
//! PP 2 resumes in one process and one of DP 2 under PP 2; the bytes each rank sends per step
//! under PP 2 and interleaved (hidden states forward, their gradients back) are the formula's.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;
use common::{alice_shards, herd, recipe, wait_while_running_for};

/// Runs `herd` with `args` as `ranks` processes of `mpirun`.
fn mpirun_herd(ranks: usize, args: &[&str]) -> Output {
    mpirun_herd_with(ranks, &[], args)
}

/// Runs `herd` with `args` as `ranks` processes of `mpirun` with `mpirun_args` before them.
fn mpirun_herd_with(ranks: usize, mpirun_args: &[&str], args: &[&str]) -> Output {
    herd_util::mpirun::mpirun(ranks)
        .args(mpirun_args)
        .arg(env!("CARGO_BIN_EXE_herd"))
        .args(args)
        .output()
        .expect("mpirun (Debian: openmpi-bin) must be on PATH for herd's mpi feature's tests")
}

/// The process id of rank `rank` of the job writing `run` (its command line names the folder).
fn rank_process(run: &Path, rank: usize) -> Option<u32> {
    let want_rank = format!("OMPI_COMM_WORLD_RANK={rank}");
    let folder = run.display().to_string();
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let has =
            |bytes: &[u8], what: &str| bytes.split(|b| *b == 0).any(|part| part == what.as_bytes());
        (has(&cmdline, &folder) && has(&environ, &want_rank)).then_some(pid)
    })
}

fn succeeded(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
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

/// How far two final models are apart: over their tensors, the largest ‖a − b‖ / ‖a‖, and the
/// largest single difference relative to its tensor's largest value.
fn weight_difference(a: &Path, b: &Path) -> (f64, f64) {
    let load = |p: &Path| {
        candle_core::safetensors::load(p.join("final/model.safetensors"), &candle_core::Device::Cpu)
            .unwrap()
    };
    let (a, b) = (load(a), load(b));
    assert_eq!(a.len(), b.len());
    let (mut norm, mut element) = (0.0f64, 0.0f64);
    for (name, x) in &a {
        let x: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let y: Vec<f32> = b[name].flatten_all().unwrap().to_vec1().unwrap();
        let scale = x.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
        let (mut squares, mut differences) = (0.0f64, 0.0f64);
        for (p, q) in x.iter().zip(&y) {
            element = element.max(f64::from((p - q).abs() / scale));
            squares += f64::from(*p).powi(2);
            differences += f64::from(p - q).powi(2);
        }
        norm = norm.max((differences / squares.max(1e-30)).sqrt());
    }
    (norm, element)
}

/// The largest relative differences of `run`'s step losses and final weights from
/// `reference`'s: losses within 1e-5 at every step; each weight tensor within 1e-5 in norm,
/// and no single weight further than 1e-4 of its tensor's largest. Returns the loss and the
/// norm differences.
fn compare(reference: &Path, run: &Path) -> (f64, f64) {
    compare_within(reference, run, 1e-4)
}

/// [`compare`] with `single` as the bound on one weight's difference relative to its tensor's
/// largest.
fn compare_within(reference: &Path, run: &Path, single: f64) -> (f64, f64) {
    let (a, b) = (losses(reference), losses(run));
    assert_eq!((a.len(), b.len()), (20, 20), "{}", run.display());
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / x.abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= 1e-5,
        "{}: losses differ by {worst:e}",
        run.display()
    );
    let (norm, element) = weight_difference(reference, run);
    assert!(
        norm <= 1e-5 && element <= single,
        "{}: final weights differ by {norm:e} in norm, {element:e} in one weight",
        run.display()
    );
    (worst, norm)
}

/// What each rank of `layout` sends in one step of `recipe`, as Open MPI's monitoring counts
/// the bytes of its collectives (the difference between runs of 3 and 2 steps), with
/// herd-parallel's formula for the step: `(rank, bytes, formula)` per rank.
fn step_traffic(
    root: &Path,
    recipe: &str,
    layout: &herd_parallel::Layout,
) -> Vec<(usize, u64, herd_parallel::volume::StepVolume)> {
    step_traffic_of(root, recipe, layout, &["C"])
}

/// [`step_traffic`] counting the monitoring's lines of `kinds` (`C` collectives, `E` the
/// point-to-point messages the program sends).
fn step_traffic_of(
    root: &Path,
    recipe: &str,
    layout: &herd_parallel::Layout,
    kinds: &[&str],
) -> Vec<(usize, u64, herd_parallel::volume::StepVolume)> {
    let s = |p: &Path| p.display().to_string();
    let ranks = layout.world_size();
    let tag = format!("{}", std::fs::read_dir(root).unwrap().count());
    let sent = |steps: &str| -> Vec<u64> {
        let prefix = root.join(format!("traffic-{tag}-{steps}"));
        let output = mpirun_herd_with(
            ranks,
            &[
                "--mca",
                "pml_monitoring_enable",
                "2",
                "--mca",
                "pml_monitoring_enable_output",
                "3",
                "--mca",
                "pml_monitoring_filename",
                &s(&prefix),
            ],
            &[
                "pretrain",
                "--recipe",
                recipe,
                "--out",
                &s(&root.join(format!("steps-{tag}-{steps}"))),
                "--max-steps",
                steps,
                "--quiet",
            ],
        );
        succeeded(&output, "a run under Open MPI's monitoring");
        (0..ranks)
            .map(|rank| {
                let report = format!("{}.{rank}.prof", prefix.display());
                let text =
                    std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("{report}: {e}"));
                text.lines()
                    .filter(|l| kinds.iter().any(|k| l.starts_with(&format!("{k}\t"))))
                    .map(|line| {
                        let bytes = line.split('\t').nth(3).expect("C rank peer bytes");
                        bytes
                            .trim_end_matches(" bytes")
                            .parse::<u64>()
                            .expect("a count")
                    })
                    .sum()
            })
            .collect()
    };
    let (two, three) = (sent("2"), sent("3"));
    let recipe = herd_train::Recipe::load(Path::new(recipe)).unwrap();
    let stage = &recipe.training.stages[0];
    let shape = herd_parallel::volume::StepShape {
        rows: stage.batch_rows,
        seq_len: stage.seq_len,
        micro_batch_rows: recipe.training.micro_batch_rows,
    };
    let formula = herd_parallel::volume::step_volume(
        &recipe.model,
        layout,
        &shape,
        &herd_parallel::volume::Precision::F32,
    )
    .unwrap();
    (0..ranks)
        .map(|rank| (rank, three[rank] - two[rank], formula))
        .collect()
}

/// The last checkpoint of a 2-rank `run` holds one optimizer file per rank.
fn one_optimizer_file_per_rank(run: &Path) {
    let last = run.join("checkpoints/step-00000020");
    let mut files: Vec<String> = std::fs::read_dir(&last)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("optimizer"))
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "optimizer-00000-of-00002.safetensors",
            "optimizer-00001-of-00002.safetensors"
        ]
    );
}

/// The test recipe of 20 steps on Alice in Wonderland's shards, made in `root`; None (the test
/// prints why and skips; under CI=true it fails instead) without ../shared's book.
fn alice_recipe(root: &Path) -> Option<std::path::PathBuf> {
    herd_util::testing::shared(common::ALICE_BOOK)?;
    alice_shards(root).expect("the book is there");
    Some(recipe(root, 20))
}

#[test]
fn data_parallel_pretraining_under_mpirun_equals_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let Some(alone) = alice_recipe(root) else {
        return;
    };
    let s = |p: &Path| p.display().to_string();
    let shared = root.join("recipe-dp2.toml");
    let text = std::fs::read_to_string(&alone).unwrap();
    std::fs::write(&shared, format!("{text}\n[parallel]\ndp = 2\n")).unwrap();
    let (alone, shared) = (s(&alone), s(&shared));

    let single = root.join("single");
    herd(&[
        "pretrain",
        "--recipe",
        &alone,
        "--out",
        &s(&single),
        "--quiet",
    ]);
    let dp2 = root.join("dp2");
    let output = mpirun_herd(
        2,
        &[
            "pretrain",
            "--recipe",
            &shared,
            "--out",
            &s(&dp2),
            "--quiet",
        ],
    );
    succeeded(&output, "DP 2");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.matches("final model:").count(),
        1,
        "only rank 0 reports:\n{stderr}"
    );
    let (losses_dp, weights_dp) = compare(&single, &dp2);
    // Each rank wrote its own slices of the optimizer state; nothing was gathered to save.
    one_optimizer_file_per_rank(&dp2);

    // A rank killed with -9 mid-run: the launcher restarts the job from its last checkpoint.
    let launched = root.join("launched");
    let mut launcher = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args([
            "pretrain",
            "--launch",
            "2",
            "--mpirun-args",
            &herd_util::mpirun::FLAGS.join(" "),
            "--recipe",
            &shared,
            "--out",
            &s(&launched),
            "--quiet",
        ])
        .envs(herd_util::mpirun::ENVIRONMENT)
        .spawn()
        .unwrap();
    wait_while_running_for(&launched.join("checkpoints/step-00000004"), &mut launcher);
    let rank_one = rank_process(&launched, 1).expect("rank 1 is running");
    let killed = Command::new("kill")
        .args(["-9", &rank_one.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(launcher.wait().unwrap().success(), "the launcher failed");
    let attempts: Vec<serde_json::Value> = std::fs::read_to_string(launched.join("launch.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0]["success"], false);
    assert!(
        attempts[0]["failure"].to_string().contains("rank 1"),
        "the log names the killed rank: {}",
        attempts[0]
    );
    assert_eq!(attempts[1]["success"], true);
    assert!(attempts[1]["resumed_from_step"].as_u64().unwrap() >= 4);
    let weights = |run: &Path| std::fs::read(run.join("final/model.safetensors")).unwrap();
    assert!(
        weights(&launched) == weights(&dp2),
        "the restarted job's weights differ from the uninterrupted run's"
    );
    println!(
        "a rank killed with -9 after step {}: restarted from step {}, final weights identical",
        attempts[0]["checkpoint_after"], attempts[1]["resumed_from_step"]
    );

    // Saved by 2 ranks at step 8, resumed by one process under the recipe without [parallel].
    let resharded = root.join("resharded");
    let output = mpirun_herd(
        2,
        &[
            "pretrain",
            "--recipe",
            &shared,
            "--out",
            &s(&resharded),
            "--max-steps",
            "8",
            "--quiet",
        ],
    );
    succeeded(&output, "DP 2 to step 8");
    herd(&[
        "pretrain",
        "--recipe",
        &alone,
        "--out",
        &s(&resharded),
        "--resume",
        "--quiet",
    ]);
    let (losses_resumed, weights_resumed) = compare(&single, &resharded);
    println!(
        "DP 2 over 20 steps: losses within {losses_dp:.1e} of one process, final weights within \
         {weights_dp:.1e}; DP 2 to step 8, then one process: {losses_resumed:.1e} and \
         {weights_resumed:.1e}"
    );

    // What each rank sends in one step, as Open MPI's monitoring counts it, is the formula's.
    let layout = herd_parallel::Layout::new(1, 1, 1, 2, 2).unwrap();
    for (rank, sent, formula) in step_traffic(root, &shared, &layout) {
        println!(
            "rank {rank} sent {sent} bytes in step 3; the formula says {}",
            formula.dp
        );
        assert_eq!(sent, formula.dp, "rank {rank}");
    }

    // Rank 0 cannot open the run (its folder holds something else): both ranks stop at once,
    // long before the collective timeout, with rank 0's reason.
    let taken = root.join("taken");
    std::fs::create_dir(&taken).unwrap();
    std::fs::write(taken.join("notes.txt"), "mine").unwrap();
    let started = Instant::now();
    let output = mpirun_herd(
        2,
        &[
            "pretrain",
            "--recipe",
            &shared,
            "--out",
            &s(&taken),
            "--collective-timeout",
            "600",
            "--quiet",
        ],
    );
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(took < Duration::from_secs(120), "took {took:?}:\n{stderr}");
    assert!(
        stderr.contains("taken"),
        "rank 0's error names the folder:\n{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(taken.join("notes.txt")).unwrap(),
        "mine"
    );

    // Two processes asked for, none launched.
    let output = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args([
            "pretrain",
            "--recipe",
            &shared,
            "--out",
            &s(&root.join("x")),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("mpirun -n 2"), "{stderr}");
    assert!(!root.join("x").exists());
}

/// `recipe` with a `[parallel]` section, written next to it as `name`.
fn with_parallel(recipe: &Path, name: &str, section: &str) -> String {
    let path = recipe.with_file_name(name);
    let text = std::fs::read_to_string(recipe).unwrap();
    std::fs::write(&path, format!("{text}\n[parallel]\n{section}\n")).unwrap();
    path.display().to_string()
}

/// `herd pretrain` of `recipe` into `out` (with `more` arguments) as `ranks` processes of
/// `mpirun`, or in this process's child when `ranks` is 1.
fn pretrain_as(ranks: usize, recipe: &str, out: &Path, more: &[&str]) {
    let out = out.display().to_string();
    let mut args = vec!["pretrain", "--recipe", recipe, "--out", &out];
    args.extend_from_slice(more);
    args.push("--quiet");
    match ranks {
        1 => herd(&args),
        _ => succeeded(
            &mpirun_herd(ranks, &args),
            &format!("{ranks} ranks: {recipe}"),
        ),
    }
}

/// Runs the one-process recipe `alone` into `root/single`, then each of `fresh` (ranks,
/// recipe, name) into `root/name`, and each of `resumed` (first, then, name) saved by `first`'s
/// 2 ranks at step 8 and resumed by `then` (2 ranks, or `alone` in one process); each must
/// [`compare`] with the one process. Returns a line of how close they came.
fn against_one_process(
    root: &Path,
    alone: &str,
    fresh: &[(usize, &str, &str)],
    resumed: &[(&str, &str, &str)],
) -> String {
    against_one_process_within(root, alone, fresh, resumed, 1e-4)
}

/// [`against_one_process`] with `single_weight` as [`compare_within`]'s bound on one weight.
fn against_one_process_within(
    root: &Path,
    alone: &str,
    fresh: &[(usize, &str, &str)],
    resumed: &[(&str, &str, &str)],
    single_weight: f64,
) -> String {
    let single = root.join("single");
    pretrain_as(1, alone, &single, &[]);
    let mut report = Vec::new();
    let mut note = |name: &str| {
        let (losses, weights) = compare_within(&single, &root.join(name), single_weight);
        report.push(format!(
            "{name}: losses within {losses:.1e}, weights {weights:.1e}"
        ));
    };
    for &(ranks, recipe, name) in fresh {
        pretrain_as(ranks, recipe, &root.join(name), &[]);
        note(name);
    }
    for &(first, then, name) in resumed {
        let out = root.join(name);
        pretrain_as(2, first, &out, &["--max-steps", "8"]);
        let ranks = if then == alone { 1 } else { 2 };
        pretrain_as(ranks, then, &out, &["--resume"]);
        note(name);
    }
    report.join("; ")
}

#[test]
fn tensor_and_context_parallel_pretraining_under_mpirun_equals_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let Some(alone) = alice_recipe(root) else {
        return;
    };
    let s = |p: &Path| p.display().to_string();
    let tp2 = with_parallel(&alone, "recipe-tp2.toml", "tp = 2");
    let tp2_dp2 = with_parallel(&alone, "recipe-tp2-dp2.toml", "tp = 2\ndp = 2");
    let cp2 = with_parallel(&alone, "recipe-cp2.toml", "cp = 2");
    let tp2_cp2 = with_parallel(&alone, "recipe-tp2-cp2.toml", "tp = 2\ncp = 2");
    let dp2 = with_parallel(&alone, "recipe-dp2.toml", "dp = 2");
    let alone = s(&alone);
    let report = against_one_process(
        root,
        &alone,
        &[
            (2, &tp2, "tp2"),
            (4, &tp2_dp2, "tp2-dp2"),
            (2, &cp2, "cp2"),
            (4, &tp2_cp2, "tp2-cp2"),
        ],
        &[(&dp2, &tp2, "dp2-then-tp2"), (&tp2, &alone, "tp2-then-one")],
    );
    println!("against one process over 20 steps: {report}");
    // The TP 2 run's checkpoint: each rank's slice of the whole optimizer state.
    one_optimizer_file_per_rank(&root.join("tp2"));

    // What each rank sends in one step of TP 2 and of CP 2 (its keys and values, and the
    // gradients sharded over the CP ranks) is the formula's.
    let layout = herd_parallel::Layout::new(2, 1, 1, 1, 2).unwrap();
    for (rank, sent, formula) in step_traffic(root, &tp2, &layout) {
        println!(
            "TP 2: rank {rank} sent {sent} bytes in step 3; the formula says {}",
            formula.tp
        );
        assert_eq!(sent, formula.tp, "rank {rank}");
    }
    let layout = herd_parallel::Layout::new(1, 2, 1, 1, 2).unwrap();
    for (rank, sent, formula) in step_traffic(root, &cp2, &layout) {
        let (cp, dp) = (formula.cp, formula.dp);
        println!("CP 2: rank {rank} sent {sent} bytes in step 3; the formula says {cp} + {dp}");
        assert_eq!(sent, cp + dp, "rank {rank}");
    }
}

#[test]
fn pipeline_parallel_pretraining_under_mpirun_equals_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let Some(alone) = alice_recipe(root) else {
        return;
    };
    let s = |p: &Path| p.display().to_string();
    let pp2 = with_parallel(&alone, "recipe-pp2.toml", "pp = 2");
    let all3 = with_parallel(&alone, "recipe-tp2-pp2-dp2.toml", "tp = 2\npp = 2\ndp = 2");
    let dp2 = with_parallel(&alone, "recipe-dp2.toml", "dp = 2");
    let alone = s(&alone);
    let report = against_one_process(
        root,
        &alone,
        &[(2, &pp2, "pp2"), (8, &all3, "tp2-pp2-dp2")],
        &[(&pp2, &alone, "pp2-then-one"), (&dp2, &pp2, "dp2-then-pp2")],
    );
    println!("against one process over 20 steps: {report}");
    // The PP 2 run's checkpoint: a file per rank, each of its stage's tensors.
    one_optimizer_file_per_rank(&root.join("pp2"));

    // Interleaved: 4 stages of a 6-layer model (1, 2, 2, 1 blocks), 2 on each rank.
    let six = root.join("six-layers");
    std::fs::create_dir(&six).unwrap();
    let text = std::fs::read_to_string(&alone).unwrap();
    let alone6 = six.join("recipe.toml");
    std::fs::write(&alone6, text.replace("n_layers = 2", "n_layers = 6")).unwrap();
    let interleaved = with_parallel(&alone6, "recipe-pp2-v2.toml", "pp = 2\nvirtual_stages = 2");
    // Its 3 stage boundaries each reorder a sum of the backward pass, and AdamW's m/√v turns
    // that noise into up to 2e-4 of a tensor's largest on weights whose gradient is near zero:
    // one weight may differ by 1e-3; every tensor stays within 1e-5 in norm.
    let run = [(2, interleaved.as_str(), "pp2-v2")];
    let report = against_one_process_within(&six, &s(&alone6), &run, &[], 1e-3);
    println!("interleaved, against one process over 20 steps: {report}");

    // Each stage sends each micro-batch's hidden states or their gradients, and the sums of
    // the loss and the norm: the formula's bytes.
    let pp = herd_parallel::Layout::new(1, 1, 2, 1, 2).unwrap();
    let layouts = [
        ("PP 2", root, &pp2, pp),
        (
            "PP 2 interleaved",
            &six,
            &interleaved,
            pp.with_virtual_stages(2).unwrap(),
        ),
    ];
    for (name, dir, recipe, layout) in layouts {
        for (rank, sent, formula) in step_traffic_of(dir, recipe, &layout, &["C", "E"]) {
            println!(
                "{name}: rank {rank} sent {sent} bytes in step 3; the formula says {}",
                formula.pp
            );
            assert_eq!(sent, formula.pp, "{name}: rank {rank}");
        }
    }
}

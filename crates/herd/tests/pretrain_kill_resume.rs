//! `herd pretrain` killed with SIGKILL mid-run and started again with `--resume` ends with the
//! same weights and the same loss curve as a run never interrupted (the exact-resume
//! criterion, through the binary, on real text).

use std::path::Path;
use std::process::Command;

mod common;
use common::{alice_shards, herd, recipe, wait_while_running_for};

fn losses(out: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{} {} {}", v["step"], v["loss"], v["val_loss"])
        })
        .collect()
}

#[test]
fn killed_and_resumed_run_matches_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    if alice_shards(root).is_none() {
        return;
    }
    let s = |p: &Path| p.display().to_string();
    let recipe = s(&recipe(root, 40));
    let straight = root.join("straight");
    herd(&[
        "pretrain",
        "--recipe",
        &recipe,
        "--out",
        &s(&straight),
        "--quiet",
    ]);

    let killed = root.join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args([
            "pretrain",
            "--recipe",
            &recipe,
            "--out",
            &s(&killed),
            "--quiet",
        ])
        .spawn()
        .unwrap();
    // Kill it once it has passed its third checkpoint, wherever it is then.
    wait_while_running_for(&killed.join("checkpoints/step-00000012"), &mut child);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!killed.join("final").exists());
    herd(&[
        "pretrain",
        "--recipe",
        &recipe,
        "--out",
        &s(&killed),
        "--resume",
        "--quiet",
    ]);

    let weights = |out: &Path| std::fs::read(out.join("final/model.safetensors")).unwrap();
    assert!(
        weights(&straight) == weights(&killed),
        "final weights differ"
    );
    assert_eq!(losses(&straight).len(), 40);
    assert_eq!(losses(&straight), losses(&killed));
}

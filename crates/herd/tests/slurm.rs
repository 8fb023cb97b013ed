//! `herd slurm` writes an sbatch script for the paper's 405B layout that a shell accepts, with
//! Slurm's allocation and the launcher's process count from the recipe, and refuses a node
//! count that does not give the recipe's processes.

use std::path::Path;
use std::process::Command;

#[test]
fn sbatch_script_for_the_405b_layout() {
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes/405b.toml");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("job.sbatch");
    let herd = |nodes: &str| {
        Command::new(env!("CARGO_BIN_EXE_herd"))
            .args(["slurm", "--recipe"])
            .arg(&recipe)
            .args([
                "--nodes",
                nodes,
                "--tasks-per-node",
                "8",
                "--partition",
                "h100",
            ])
            .args(["--out", "/shared/runs/405b's run", "--script"])
            .arg(&script)
            .output()
            .unwrap()
    };
    let output = herd("2048");
    assert!(output.status.success(), "{output:?}");
    let text = std::fs::read_to_string(&script).unwrap();
    for line in [
        "#SBATCH --nodes=2048",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --partition=h100",
        "#SBATCH --requeue",
        "--launch 16384",
        "out='/shared/runs/405b'\\''s run'",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(syntax.success(), "bash rejects the script:\n{text}");

    let wrong = herd("16");
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success());
    assert!(
        stderr.contains("16384") && stderr.contains("128 processes"),
        "{stderr}"
    );
}

//! Restarts (paper §3.3.4: automated detection and restart after failures): run a training
//! job as `mpirun -n N …`, watch it, and when it fails — a rank killed, a node lost, a
//! collective timed out — start it again from its last checkpoint, up to a number of restarts,
//! writing what happened to `<run>/launch.jsonl`.
//!
//! `mpirun` ends the whole job when one rank dies, so a failure is one exit status; its error
//! lines (which rank, which signal) are passed through to the terminal and kept in the log.
//! A job that fails before it has opened its run folder (a bad recipe, missing data) is not
//! restarted: that is no transient fault.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// A job to run and restart.
#[derive(Debug, Clone)]
pub struct Job {
    /// Processes (`mpirun -n`).
    pub ranks: usize,
    /// Arguments for `mpirun` itself (a hostfile, `--oversubscribe`, …).
    pub mpirun_args: Vec<String>,
    /// The program each rank runs, and its arguments for the first attempt.
    pub program: PathBuf,
    /// Arguments of the first attempt.
    pub first_args: Vec<String>,
    /// Arguments of every later attempt (the first's with `--resume`).
    pub resume_args: Vec<String>,
    /// The run's folder: restarts need its marker file, the log goes there.
    pub run_dir: PathBuf,
    /// Restarts allowed after the first attempt.
    pub max_restarts: usize,
}

/// How a supervised job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Attempts made (1 when nothing failed).
    pub attempts: usize,
}

/// Lines of `mpirun`'s error output kept per attempt in the log.
const KEPT_LINES: usize = 20;

fn seconds_since_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The newest checkpoint step under `run_dir`, if any.
fn newest_checkpoint(run_dir: &Path) -> Option<u64> {
    herd_train::checkpoint::list_steps(&run_dir.join("checkpoints"))
        .ok()?
        .last()
        .copied()
}

/// Runs `job`, restarting it after failures; `interrupted` (set by Ctrl-C) stops it without a
/// restart.
pub fn supervise(job: &Job, interrupted: &Arc<AtomicBool>) -> Result<Outcome> {
    let failure = |message: String| Error::Launch(message);
    for attempt in 1..=job.max_restarts + 1 {
        let args = if attempt == 1 {
            &job.first_args
        } else {
            &job.resume_args
        };
        let started = (seconds_since_epoch(), Instant::now());
        let from_step = newest_checkpoint(&job.run_dir);
        let mut child = Command::new("mpirun")
            .arg("-n")
            .arg(job.ranks.to_string())
            .args(&job.mpirun_args)
            .arg(&job.program)
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                failure(format!(
                    "cannot start mpirun ({e}): install Open MPI (Debian: openmpi-bin) or put \
                     mpirun on PATH"
                ))
            })?;
        // Pass mpirun's error output through, keeping its last lines for the log.
        let mut kept: VecDeque<String> = VecDeque::with_capacity(KEPT_LINES + 1);
        let stderr = child.stderr.take().expect("piped");
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            eprintln!("{line}");
            kept.push_back(line);
            if kept.len() > KEPT_LINES {
                kept.pop_front();
            }
        }
        let status = child
            .wait()
            .map_err(|e| failure(format!("waiting for mpirun: {e}")))?;
        let failed_ranks: Vec<&str> = kept
            .iter()
            .filter(|l| l.contains("process rank"))
            .map(String::as_str)
            .collect();
        let entry = serde_json::json!({
            "attempt": attempt,
            "started_unix_s": started.0,
            "seconds": started.1.elapsed().as_secs_f64(),
            "resumed_from_step": if attempt == 1 { None } else { from_step },
            "exit_code": status.code(),
            "success": status.success(),
            "failure": if status.success() { None } else { Some(&failed_ranks) },
            "last_error_lines": if status.success() { None } else { Some(&kept) },
            "checkpoint_after": newest_checkpoint(&job.run_dir),
        });
        // A job that never opened its folder leaves none behind (nor a log in it).
        if !job.run_dir.join(herd_util::fs::MARKER).exists() {
            return Err(failure(format!(
                "the job failed before it opened {} ({status}); not restarting",
                job.run_dir.display()
            )));
        }
        log(&job.run_dir, &entry)?;
        if status.success() {
            return Ok(Outcome { attempts: attempt });
        }
        if interrupted.load(Ordering::SeqCst) {
            return Err(failure("interrupted; not restarting".into()));
        }
        if attempt <= job.max_restarts {
            eprintln!(
                "launch: attempt {attempt} failed ({status}); restarting from {} ({} of {} \
                 restarts)",
                newest_checkpoint(&job.run_dir)
                    .map_or("the start".to_string(), |s| format!("step {s}")),
                attempt,
                job.max_restarts
            );
        }
    }
    Err(failure(format!(
        "the job failed {} times; the log is {}",
        job.max_restarts + 1,
        job.run_dir.join("launch.jsonl").display()
    )))
}

/// Appends `entry` to the run's launch log.
fn log(run_dir: &Path, entry: &serde_json::Value) -> Result<()> {
    let path = run_dir.join("launch.jsonl");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| writeln!(file, "{entry}"))
        .map_err(|e| Error::Launch(format!("{}: {e}", path.display())))
}

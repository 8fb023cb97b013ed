//! `herd pretrain`: run a pretraining recipe (`recipes/*.toml`), in this process or as one of
//! the ranks `mpirun` started for the recipe's `[parallel]` section.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use herd_parallel::supervisor::{self, Job};
use herd_parallel::volume::{self, Precision, StepShape};
use herd_parallel::Layout;
use herd_train::{Recipe, RunOptions};

/// Flags of `herd pretrain`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The recipe: model shape, data mix, optimizer, schedules (see recipes/tiny.toml).
    #[arg(long, short)]
    recipe: PathBuf,
    /// Output folder: checkpoints/, anneal/, final/ (an HF model folder), metrics.jsonl
    /// [default: runs/<recipe name>].
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Stop after this step (writing a checkpoint there); --resume continues later.
    #[arg(long)]
    max_steps: Option<u64>,
    /// Continue the run in --out from its newest checkpoint, exactly as if never stopped (the
    /// recipe, tokenizer and shards must be the ones it was started with).
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Delete an earlier run in --out and start again.
    #[arg(long)]
    overwrite: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Under MPI: seconds one collective may wait before the job is ended, each rank writing
    /// its last calls to <out>/flight-recorder/ (a dead or stuck rank then stops the job
    /// instead of hanging it).
    #[arg(long, default_value_t = 300.0, value_parser = positive_seconds)]
    collective_timeout: f64,
    /// Print, without training, what each rank of the recipe's [parallel] layout holds and
    /// sends per step in each stage (tensor, context, pipeline and data parallelism), with
    /// herd's f32 numerics or the paper's bf16 (gradients reduced in f32).
    #[arg(long, value_name = "NUMERICS", num_args = 0..=1, default_missing_value = "f32")]
    plan: Option<Numerics>,
    /// Start the recipe's N processes with `mpirun -n N` and watch them: when the job fails (a
    /// rank killed, a collective timed out), start it again from its last checkpoint, up to
    /// --max-restarts times; <out>/launch.jsonl logs each attempt and what failed.
    #[arg(long, value_name = "N")]
    launch: Option<usize>,
    /// With --launch: restarts allowed after the first attempt.
    #[arg(long, default_value_t = 3, requires = "launch")]
    max_restarts: usize,
    /// With --launch: arguments for mpirun itself, space-separated (e.g. "--hostfile hosts"
    /// or "--oversubscribe").
    #[arg(
        long,
        default_value = "",
        requires = "launch",
        allow_hyphen_values = true
    )]
    mpirun_args: String,
}

/// The numerics a plan counts bytes in.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Numerics {
    /// herd on the CPU: f32 activations, gradients and parameters.
    F32,
    /// The paper's GPUs: bf16 activations and parameters, gradients reduced in f32.
    Bf16,
}

fn positive_seconds(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 => Ok(s),
        _ => Err(format!("{text:?} is not a positive number of seconds")),
    }
}

/// Runs `herd pretrain`.
pub fn run(args: Args) -> Result<()> {
    let recipe = Recipe::load(&args.recipe)?;
    if let Some(numerics) = args.plan {
        return plan(&recipe, numerics);
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&recipe.name));
    if let Some(ranks) = args.launch {
        return launch(&args, &recipe, &out, ranks);
    }
    // Of the ranks of a parallel run, the first speaks for all.
    let speaks = herd_parallel::launch::launched_rank().unwrap_or(0) == 0;
    if speaks {
        describe(&recipe, &args.recipe, &out)?;
    }
    let options = RunOptions {
        out: out.clone(),
        max_steps: args.max_steps,
        resume: args.resume,
        overwrite: args.overwrite,
        progress: speaks && !args.quiet,
    };
    let timeout = Duration::from_secs_f64(args.collective_timeout);
    let summary = herd_parallel::launch::pretrain(&recipe, &options, timeout)?;
    if !speaks {
        return Ok(());
    }
    let loss = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    eprintln!(
        "step {}: loss {}, validation loss {}, {} skipped steps; metrics in {}",
        summary.steps,
        loss(summary.last_loss),
        loss(summary.val_loss),
        summary.skipped_steps,
        out.join("metrics.jsonl").display()
    );
    match summary.final_model {
        Some(dir) => eprintln!(
            "final model: {} (try `herd generate --model {} --prompt …`)",
            dir.display(),
            dir.display()
        ),
        None => eprintln!(
            "stopped before the end; continue with `herd pretrain --recipe {} --out {} --resume`",
            args.recipe.display(),
            out.display()
        ),
    }
    Ok(())
}

/// Runs the recipe as `ranks` processes of `mpirun` under the supervisor, which restarts the
/// job with `--resume` after a failure.
fn launch(args: &Args, recipe: &Recipe, out: &Path, ranks: usize) -> Result<()> {
    let wanted = recipe.parallel.world_size();
    if ranks != wanted {
        bail!(
            "--launch {ranks}, but the recipe's [parallel] section asks for {wanted} processes \
             (tp × cp × pp × dp)"
        );
    }
    let mut first = vec![
        "pretrain".to_string(),
        "--recipe".into(),
        args.recipe.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--collective-timeout".into(),
        args.collective_timeout.to_string(),
    ];
    if let Some(steps) = args.max_steps {
        first.extend(["--max-steps".into(), steps.to_string()]);
    }
    if args.quiet {
        first.push("--quiet".into());
    }
    let mut resume = first.clone();
    resume.push("--resume".into());
    if args.resume {
        first.push("--resume".into());
    }
    if args.overwrite {
        first.push("--overwrite".into());
    }
    let job = Job {
        ranks,
        mpirun_args: args
            .mpirun_args
            .split_whitespace()
            .map(String::from)
            .collect(),
        program: std::env::current_exe()?,
        first_args: first,
        resume_args: resume,
        run_dir: out.to_path_buf(),
        max_restarts: args.max_restarts,
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))?;
    let outcome = supervisor::supervise(&job, &interrupted)?;
    eprintln!(
        "launch: the job ended after {} attempt{}; log in {}",
        outcome.attempts,
        if outcome.attempts == 1 { "" } else { "s" },
        out.join("launch.jsonl").display()
    );
    Ok(())
}

/// Says what the run is (layout, shape, steps, memory) and refuses one this machine cannot hold.
fn describe(recipe: &Recipe, path: &Path, out: &Path) -> Result<()> {
    let c = &recipe.model;
    let p = recipe.parallel;
    if p.world_size() > 1 {
        eprintln!(
            "parallel: tp {} × cp {} × pp {} × dp {} = {} processes",
            p.tp,
            p.cp,
            p.pp,
            p.dp,
            p.world_size()
        );
    }
    eprintln!(
        "recipe {} ({}): {} layers, d {}, {:.1}M parameters, {} steps → {}",
        recipe.name,
        path.display(),
        c.n_layers,
        c.dim,
        c.num_parameters() as f64 / 1e6,
        recipe.lr.total_steps,
        out.display()
    );
    let (state, activations) = recipe.memory_estimate();
    let needed = state + activations;
    let gb = |b: u64| b as f64 / 1e9;
    eprintln!(
        "memory: ~{:.1} GB (weights, gradients, AdamW {:.1} GB + activations {:.1} GB)",
        gb(needed),
        gb(state),
        gb(activations)
    );
    if let Some(available) = available_memory() {
        if needed > available {
            bail!(
                "recipe {} needs ~{:.1} GB but this machine has {:.1} GB available: \
                 it is meant for a bigger machine (or lower micro_batch_rows)",
                recipe.name,
                gb(needed),
                gb(available)
            );
        }
    }
    Ok(())
}

/// Prints the rank share and the bytes each dimension sends per step, stage by stage.
fn plan(recipe: &Recipe, numerics: Numerics) -> Result<()> {
    let p = recipe.parallel;
    let layout = Layout::new(p.tp, p.cp, p.pp, p.dp, p.world_size())?
        .with_virtual_stages(p.virtual_stages)?;
    let c = &recipe.model;
    let share = volume::rank_share(c, &layout)?;
    let stages = volume::stage_layers(c.n_layers, p.pp * p.virtual_stages)?;
    let interleaved = match p.virtual_stages {
        1 => String::new(),
        v => format!(" ({v} per pipeline rank, interleaved)"),
    };
    println!(
        "{}: tp {} × cp {} × pp {} × dp {} = {} ranks; layers per pipeline stage{interleaved} {}",
        recipe.name,
        p.tp,
        p.cp,
        p.pp,
        p.dp,
        p.world_size(),
        stages
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "busiest rank: {:.4e} parameters, {} of state (f32 weights and gradients; for its \
         1/{} of each tensor — sharded over cp × dp — the reduced gradient and AdamW's moments)",
        share.parameters as f64,
        bytes(share.state_bytes),
        p.cp * p.dp
    );
    let precision = match numerics {
        Numerics::F32 => Precision::F32,
        Numerics::Bf16 => Precision::BF16,
    };
    let name = match numerics {
        Numerics::F32 => "f32",
        Numerics::Bf16 => "bf16, gradients reduced in f32",
    };
    println!("sent per step by the busiest rank of each dimension ({name}):");
    println!(
        "{:>10} {:>6} {:>7} {:>13} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "until step", "rows", "seq_len", "micro-batches", "TP", "CP", "PP", "DP", "total"
    );
    for stage in &recipe.training.stages {
        let shape = StepShape {
            rows: stage.batch_rows,
            seq_len: stage.seq_len,
            micro_batch_rows: recipe.training.micro_batch_rows,
        };
        let v = volume::step_volume(c, &layout, &shape, &precision)?;
        println!(
            "{:>10} {:>6} {:>7} {:>13} {:>10} {:>10} {:>10} {:>10} {:>10}",
            stage.until_step,
            stage.batch_rows,
            stage.seq_len,
            stage.batch_rows / p.dp / recipe.training.micro_batch_rows,
            bytes(v.tp),
            bytes(v.cp),
            bytes(v.pp),
            bytes(v.dp),
            bytes(v.total())
        );
    }
    Ok(())
}

/// `bytes` in B, kB, MB, GB or TB (powers of 1000), three significant digits.
fn bytes(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < units.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ => format!("{value:.3} {}", units[unit]),
    }
}

/// `MemAvailable` of /proc/meminfo in bytes (Linux), if readable.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

//! `herd slurm`: write the `sbatch` script that pretrains a recipe on a Slurm cluster — N nodes
//! × P processes, the recipe's `[parallel]` layout over them — through `herd pretrain --launch`,
//! so a job that loses a rank restarts from its last checkpoint inside the allocation, and a
//! requeued job resumes its run.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Result};
use herd_train::Recipe;

/// Flags of `herd slurm`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pretraining recipe; its [parallel] degrees must multiply to nodes × tasks per node.
    #[arg(long, short)]
    recipe: PathBuf,
    /// Nodes to allocate.
    #[arg(long, value_parser = super::values::count)]
    nodes: usize,
    /// Processes per node (GPUs per node on a GPU cluster).
    #[arg(long, value_parser = super::values::count)]
    tasks_per_node: usize,
    /// The run's folder, on a file system every node sees [default: runs/<recipe name>].
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Wall-time limit (Slurm's --time).
    #[arg(long, default_value = "48:00:00")]
    time: String,
    /// Partition (Slurm's --partition).
    #[arg(long)]
    partition: Option<String>,
    /// Account (Slurm's --account).
    #[arg(long)]
    account: Option<String>,
    /// Restarts after failures within one allocation (`herd pretrain --max-restarts`).
    #[arg(long, default_value_t = 3)]
    max_restarts: usize,
    /// The herd binary the nodes run (on a shared file system) [default: this one].
    #[arg(long)]
    herd: Option<PathBuf>,
    /// Write the script here instead of standard output.
    #[arg(long)]
    script: Option<PathBuf>,
}

/// Quotes `text` for a POSIX shell.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Runs `herd slurm`.
pub fn run(args: Args) -> Result<()> {
    let recipe = Recipe::load(&args.recipe)?;
    let ranks = args.nodes * args.tasks_per_node;
    let p = recipe.parallel;
    if ranks != p.world_size() {
        bail!(
            "{} nodes × {} tasks = {ranks} processes, but {}'s [parallel] asks for {} \
             (tp {} × cp {} × pp {} × dp {})",
            args.nodes,
            args.tasks_per_node,
            args.recipe.display(),
            p.world_size(),
            p.tp,
            p.cp,
            p.pp,
            p.dp
        );
    }
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("runs").join(&recipe.name));
    let herd = match args.herd {
        Some(path) => path,
        None => std::env::current_exe()?,
    };
    let mut s = String::new();
    writeln!(s, "#!/bin/bash")?;
    writeln!(
        s,
        "# herd pretrain of {} ({ranks} processes), made by `herd slurm`.",
        recipe.name
    )?;
    writeln!(s, "#SBATCH --job-name=herd-{}", recipe.name)?;
    writeln!(s, "#SBATCH --nodes={}", args.nodes)?;
    writeln!(s, "#SBATCH --ntasks-per-node={}", args.tasks_per_node)?;
    writeln!(s, "#SBATCH --time={}", args.time)?;
    if let Some(partition) = &args.partition {
        writeln!(s, "#SBATCH --partition={partition}")?;
    }
    if let Some(account) = &args.account {
        writeln!(s, "#SBATCH --account={account}")?;
    }
    writeln!(s, "#SBATCH --output=slurm-herd-{}-%j.log", recipe.name)?;
    writeln!(s, "#SBATCH --requeue")?;
    writeln!(s, "set -euo pipefail")?;
    writeln!(s, "out={}", quoted(&out.display().to_string()))?;
    writeln!(
        s,
        "# A requeued job continues its run; a fresh one starts it."
    )?;
    writeln!(s, "resume=")?;
    writeln!(
        s,
        "if [ -f \"$out/.herd-run.json\" ]; then resume=--resume; fi"
    )?;
    writeln!(
        s,
        "# mpirun inside the allocation starts one process per task on the allocated nodes;"
    )?;
    writeln!(
        s,
        "# herd restarts the job from its last checkpoint when a rank fails."
    )?;
    writeln!(
        s,
        "{} pretrain --recipe {} --out \"$out\" --launch {ranks} --max-restarts {} --quiet \
         $resume",
        quoted(&herd.display().to_string()),
        quoted(&args.recipe.display().to_string()),
        args.max_restarts
    )?;
    match args.script {
        Some(path) => {
            herd_util::fs::write_atomic(&path, s.as_bytes())?;
            eprintln!(
                "wrote {} (submit it with `sbatch {}`)",
                path.display(),
                path.display()
            );
        }
        None => print!("{s}"),
    }
    Ok(())
}

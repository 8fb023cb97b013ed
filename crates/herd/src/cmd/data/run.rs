//! `herd data run`: a curation pipeline file run for one task, with a progress bar and a table
//! of what each stage removed.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use herd_data::pipeline::{run, Pipeline, Progress, RunOptions};
use indicatif::{ProgressBar, ProgressStyle};

/// Flags of `herd data run`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline file: [input], [output] and the [[stages]] in order (see
    /// recipes/curate-*.toml).
    pipeline: PathBuf,
    /// Split the input files into this many tasks (a Slurm array's size).
    #[arg(long, default_value_t = 1, env = "SLURM_ARRAY_TASK_COUNT", value_parser = crate::cmd::values::count)]
    tasks: usize,
    /// This task, 0-based (a Slurm array's task id).
    #[arg(long, default_value_t = 0, env = "SLURM_ARRAY_TASK_ID")]
    rank: usize,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Delete the output folder's earlier run when it was made from other inputs or stage
    /// settings, and start again (without it such a folder is refused; an unchanged one is
    /// resumed).
    #[arg(long)]
    overwrite: bool,
}

/// Runs `herd data run`.
pub fn run_pipeline(args: Args) -> Result<()> {
    let langid = herd_util::assets::cache_dir().join("fasttext/lid.176.ftz");
    let pipeline = Pipeline::load(&args.pipeline, &langid)?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} phase {prefix} file {pos}/{len} [{elapsed_precise} < {eta_precise}] {wide_bar} {msg}",
        )
        .expect("template"),
    );
    let started = Instant::now();
    let mut phase = usize::MAX;
    let options = RunOptions {
        tasks: args.tasks,
        rank: args.rank,
        overwrite: args.overwrite,
    };
    let summary = run(&pipeline, &options, &mut |p: Progress| {
        if p.phase.0 != phase {
            phase = p.phase.0;
            bar.set_length(p.file.1 as u64);
            bar.reset();
            bar.set_prefix(format!("{}/{}", p.phase.0 + 1, p.phase.1));
        }
        bar.set_position(p.file.0 as u64);
        let s = started.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "{} docs in, {} kept · {:.0} docs/s · {:.1} MB/s",
            p.counts.docs_in,
            p.counts.docs_out,
            p.counts.docs_in as f64 / s,
            p.counts.bytes_in as f64 / s / 1e6
        ));
    })?;
    bar.finish_and_clear();
    eprintln!(
        "task {} of {}: {} input files in {:.1} s",
        args.rank, args.tasks, summary.files, summary.seconds
    );
    eprintln!(
        "{:<36} {:>10} {:>10} {:>8}",
        "stage: reason", "docs in", "removed", "share"
    );
    for (stages, counts) in &summary.phases {
        eprintln!("-- {}", stages.join(" → "));
        for (reason, n) in &counts.removed {
            eprintln!(
                "{:<36} {:>10} {:>10} {:>7.2}%",
                format!("  {reason}"),
                counts.docs_in,
                n,
                100.0 * *n as f64 / counts.docs_in.max(1) as f64
            );
        }
        if counts.lines_removed > 0 {
            eprintln!("  {} lines removed", counts.lines_removed);
        }
        if counts.bad_records > 0 {
            eprintln!("  {} bad records skipped, e.g.:", counts.bad_records);
            for e in &counts.bad_examples {
                eprintln!("    {e}");
            }
        }
    }
    let last = summary
        .phases
        .last()
        .map(|(_, c)| c.clone())
        .unwrap_or_default();
    eprintln!(
        "kept {} documents ({:.1} MB of text) → {}",
        last.docs_out,
        last.bytes_out as f64 / 1e6,
        pipeline.out.join("docs").display()
    );
    Ok(())
}

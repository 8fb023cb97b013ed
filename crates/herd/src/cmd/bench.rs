//! `herd bench`: prompt-processing (pp) and decode (tg) tokens/s, with the machine described.

use anyhow::Result;
use serde_json::json;

use super::ModelArgs;

/// Flags of `herd bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt tokens processed in one pass.
    #[arg(short = 'p', long, default_value_t = 128, value_parser = super::values::count)]
    prompt_tokens: usize,
    /// Tokens decoded one at a time.
    #[arg(short = 'n', long, default_value_t = 64, value_parser = super::values::count)]
    gen_tokens: usize,
    /// Repetitions of each test (after one warm-up).
    #[arg(short = 'r', long, default_value_t = 3, value_parser = super::values::count)]
    repetitions: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Runs `herd bench`.
pub fn run(args: Args) -> Result<()> {
    let loaded = args.model.load()?;
    let threads = candle_core::utils::get_num_threads();
    let pp =
        herd_infer::bench::prompt_processing(&loaded.model, args.prompt_tokens, args.repetitions)?;
    let tg = herd_infer::bench::decode(&loaded.model, args.gen_tokens, args.repetitions)?;
    let model = args.model.model.display().to_string();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"model": model, "cpu": cpu_name(), "threads": threads, "pp": pp, "tg": tg})
            )?
        );
        return Ok(());
    }
    println!(
        "model: {model} ({:?}, {:.1}M parameters)",
        loaded.format,
        loaded.model.config().num_parameters() as f64 / 1e6
    );
    println!(
        "cpu: {} | threads: {threads} | avx2: {} | avx512f: {}",
        cpu_name(),
        cfg!(target_feature = "avx2"),
        cfg!(target_feature = "avx512f")
    );
    println!("| test | tokens/s |");
    println!("|---|---|");
    println!("| pp{} | {:.1} ± {:.1} |", pp.tokens, pp.mean, pp.stdev);
    println!("| tg{} | {:.1} ± {:.1} |", tg.tokens, tg.mean, tg.stdev);
    Ok(())
}

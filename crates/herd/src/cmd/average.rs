//! `herd average`: the element-wise mean of checkpoints of one shape (paper §3.4.3, §4.1.5).

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::Device;
use herd_train::average::average_checkpoints;

/// Flags of `herd average`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// HF model folders to average (two or more, same shape).
    #[arg(long = "model", short, required = true, num_args = 1..)]
    models: Vec<PathBuf>,
    /// Output folder (an HF model folder; the first model's tokenizer is copied).
    #[arg(long, short)]
    out: PathBuf,
}

/// Runs `herd average`.
pub fn run(args: Args) -> Result<()> {
    let dirs: Vec<&Path> = args.models.iter().map(PathBuf::as_path).collect();
    let (config, mean) = average_checkpoints(&dirs, &Device::Cpu)?;
    let tokenizer = ["tokenizer.model", "tokenizer.json"]
        .iter()
        .map(|name| dirs[0].join(name))
        .find(|p| p.exists());
    match tokenizer {
        Some(t) => herd_train::checkpoint::save_model(&args.out, &config, &mean, &t)?,
        None => herd_model::checkpoint::hf::save(
            &args.out,
            &config,
            &mean,
            candle_core::DType::F32,
            usize::MAX,
        )?,
    }
    eprintln!(
        "averaged {} checkpoints into {}",
        dirs.len(),
        args.out.display()
    );
    Ok(())
}

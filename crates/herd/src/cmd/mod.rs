//! The subcommands and the flags they share.

pub mod average;
pub mod bench;
pub mod chat;
pub mod data;
pub mod dpo;
pub mod eval;
pub mod fetch;
pub mod generate;
pub mod needles;
pub mod perplexity;
pub mod plot;
pub mod posttrain;
pub mod pretrain;
pub mod rm;
pub mod rs;
pub mod scaling;
pub mod score;
pub mod serve;
pub mod sft;
pub mod slurm;
pub mod tokenizer;
pub mod tokens;
pub mod train_args;
pub mod values;

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::{DType, Device};
use herd_infer::{LoadedModel, SamplingConfig};

/// Which model to load and how.
#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// Model: a .gguf file, an HF folder (config.json + safetensors) or a Meta folder
    /// (params.json + consolidated.*.pth).
    #[arg(long, short)]
    pub model: PathBuf,
    /// Tokenizer to use instead of the model's own (tokenizer.model, tokenizer.json or a GGUF).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Activation and weight dtype for dense weights: f32, f16 or bf16 (quantized GGUF weights
    /// always run with f32 activations).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Expand quantized GGUF weights to dense f32 at load (slower; the numbers of tools that
    /// dequantize, such as transformers loading the GGUF).
    #[arg(long)]
    pub dequantize: bool,
}

impl ModelArgs {
    /// Loads the model on the CPU.
    pub fn load(&self) -> Result<LoadedModel> {
        let dtype = match self.dtype.as_str() {
            "f32" => DType::F32,
            "f16" => DType::F16,
            "bf16" => DType::BF16,
            other => bail!("--dtype {other}: use f32, f16 or bf16"),
        };
        let quantized = if self.dequantize {
            herd_infer::Quantized::Dequantize
        } else {
            herd_infer::Quantized::Keep
        };
        herd_infer::load(
            &self.model,
            self.tokenizer.as_deref(),
            dtype,
            quantized,
            &Device::Cpu,
        )
    }
}

/// Sampling flags (defaults as llama.cpp's).
#[derive(clap::Args, Debug)]
pub struct SamplingArgs {
    /// Softmax temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8, value_parser = values::non_negative_f32)]
    pub temperature: f32,
    /// Always pick the most likely token (same as --temperature 0).
    #[arg(long)]
    pub greedy: bool,
    /// Keep the k most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Keep the most likely tokens up to this total probability (0 < p ≤ 1).
    #[arg(long, default_value_t = 0.95, value_parser = values::nonzero_probability_f32)]
    pub top_p: f32,
    /// Drop tokens less likely than this fraction of the best one (0 to 1).
    #[arg(long, default_value_t = 0.05, value_parser = values::probability_f32)]
    pub min_p: f32,
    /// Divide the logits of tokens already in the context by this (1: off; above 0).
    #[arg(long, default_value_t = 1.0, value_parser = values::positive_f32)]
    pub repetition_penalty: f32,
    /// Subtract this from the logit of every token already generated (OpenAI's presence
    /// penalty, -2 to 2; 0: off).
    #[arg(long, default_value_t = 0.0, value_parser = values::openai_penalty)]
    pub presence_penalty: f32,
    /// Subtract this times the count of each token already generated (OpenAI's frequency
    /// penalty, -2 to 2; 0: off).
    #[arg(long, default_value_t = 0.0, value_parser = values::openai_penalty)]
    pub frequency_penalty: f32,
    /// Seed of the sampler; the same seed gives the same text.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    /// The sampler configuration.
    pub fn config(&self) -> SamplingConfig {
        SamplingConfig {
            temperature: if self.greedy { 0.0 } else { self.temperature },
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            seed: self.seed,
        }
    }
}

/// Reads all of stdin, for commands whose input was not given as a flag; text that is not
/// UTF-8 is refused with the byte where it stops being so.
pub fn read_stdin() -> Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::io::stdin().read_to_end(&mut bytes)?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "stdin is not UTF-8 text (byte {} is not): convert it first, e.g. with iconv",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Reads a text file (plain, `.gz` or `.zst`, as herd's record reader opens them); text that is
/// not UTF-8 is refused with the byte where it stops being so.
pub fn read_text_file(path: &std::path::Path) -> Result<String> {
    use herd_util::records::{open, read_all, Compression};
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let (compression, _) = Compression::of_name(&name);
    let bytes = read_all(&mut open(path, compression)?)
        .map_err(|reason| anyhow::anyhow!("{}: {reason}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not UTF-8 text (byte {} is not)",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// Prints the records that could not be read (the first 20 and a count), so none is dropped
/// silently.
pub fn report_bad_records(bad: &[herd_data::reader::BadRecord]) {
    for record in bad.iter().take(20) {
        eprintln!("{}: {} (record skipped)", record.at, record.reason);
    }
    if bad.len() > 20 {
        eprintln!("… and {} more bad records", bad.len() - 20);
    }
    if !bad.is_empty() {
        eprintln!("{} bad records skipped in all", bad.len());
    }
}

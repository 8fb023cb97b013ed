//! Opens a model path (GGUF file, HF folder or Meta folder) with its tokenizer: the one a GGUF
//! embeds, `tokenizer.json`/`tokenizer.model` in the folder, or one given explicitly.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use herd_model::checkpoint::{self, gguf::Metadata, Format};
use herd_model::Llama;
use herd_tokenizer::byte_level::GgufVocab;
use herd_tokenizer::{GgufTokenizerInfo, Tokenizer};

/// A model ready to run and the tokenizer that goes with it.
pub struct LoadedModel {
    /// The network.
    pub model: Llama,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// The checkpoint format it came from.
    pub format: Format,
}

/// What becomes of quantized GGUF weights at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quantized {
    /// They stay quantized and run on herd's quantized kernels.
    #[default]
    Keep,
    /// They are expanded to dense weights (numbers comparable with tools that dequantize).
    Dequantize,
}

/// Loads `path`; `tokenizer` overrides the tokenizer found with the model. Dense weights are
/// cast to `dtype`; quantized GGUF weights stay quantized unless `quantized` says otherwise.
pub fn load(
    path: &Path,
    tokenizer: Option<&Path>,
    dtype: DType,
    quantized: Quantized,
    device: &Device,
) -> Result<LoadedModel> {
    let mut ckpt = checkpoint::load(path, device)?;
    if quantized == Quantized::Dequantize {
        ckpt.weights.dequantize()?;
    }
    let tokenizer = match (tokenizer, &ckpt.gguf_metadata) {
        (Some(t), _) => Tokenizer::from_path(t)?,
        (None, Some(metadata)) => gguf_tokenizer(metadata, path)?,
        (None, None) => Tokenizer::from_path(path)
            .with_context(|| format!("{}: no tokenizer found; pass --tokenizer", path.display()))?,
    };
    if tokenizer.vocab_size() > ckpt.config.vocab_size {
        bail!(
            "the tokenizer has {} ids but the model only {}: is --tokenizer the model's own?",
            tokenizer.vocab_size(),
            ckpt.config.vocab_size
        );
    }
    let model = Llama::load(ckpt.config, &ckpt.weights, dtype, device)?;
    Ok(LoadedModel {
        model,
        tokenizer,
        format: ckpt.format,
    })
}

/// A tokenizer from a file or folder: a GGUF (its embedded tokenizer), `tokenizer.model`,
/// `tokenizer.json`, or a model folder holding one.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    if path.is_file() && checkpoint::detect(path).is_ok_and(|f| f == Format::Gguf) {
        let metadata = herd_model::checkpoint::gguf::read_metadata(path)?;
        return gguf_tokenizer(&metadata, path);
    }
    Ok(Tokenizer::from_path(path)?)
}

/// The tokenizer embedded in GGUF metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`).
pub fn gguf_tokenizer(md: &Metadata, path: &Path) -> Result<Tokenizer> {
    let string = |key: &str| md.get(key).and_then(|v| v.to_string().ok()).cloned();
    let id = |key: &str| md.get(key).and_then(|v| v.to_u32().ok());
    let strings = |key: &str| -> Result<Vec<String>> {
        match md.get(key) {
            None => Ok(Vec::new()),
            Some(v) => v
                .to_vec()?
                .iter()
                .map(|s| s.to_string().cloned())
                .collect::<candle_core::Result<Vec<_>>>()
                .with_context(|| format!("{}: `{key}` is not a list of strings", path.display())),
        }
    };
    let model = string("tokenizer.ggml.model").unwrap_or_default();
    if model != "gpt2" {
        bail!("{}: GGUF tokenizer model `{model}` is not supported (byte-level BPE `gpt2` is); pass --tokenizer", path.display());
    }
    let token_types = match md.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()?
            .iter()
            .map(|t| t.to_i32().or_else(|_| t.to_u32().map(|u| u as i32)))
            .collect::<candle_core::Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    let mut stop = Vec::new();
    for key in [
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
    ] {
        if let Some(i) = id(key).filter(|i| !stop.contains(i)) {
            stop.push(i);
        }
    }
    let info = GgufTokenizerInfo {
        vocab: GgufVocab {
            pre: string("tokenizer.ggml.pre"),
            tokens: strings("tokenizer.ggml.tokens")?,
            token_types,
            merges: strings("tokenizer.ggml.merges")?,
        },
        bos: id("tokenizer.ggml.bos_token_id"),
        stop,
        add_bos: md
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok()),
        chat_template: string("tokenizer.chat_template"),
    };
    Ok(Tokenizer::from_gguf(info, path)?)
}

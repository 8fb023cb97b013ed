//! Checkpoint adapters: each reads one format's config and tensors into herd's [`LlamaConfig`]
//! and HF-named [`Weights`]. The format of a path is recognised from what it contains.

pub mod gguf;
pub mod gguf_file;
pub mod hf;
pub mod meta;
pub mod permute;

use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::config::LlamaConfig;
use crate::error::{Error, Result};
use crate::weights::Weights;

/// The checkpoint formats herd reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A folder with `config.json` and safetensors (Hugging Face).
    Hf,
    /// A `.gguf` file (llama.cpp).
    Gguf,
    /// A folder with `params.json` and `consolidated.*.pth` (Meta).
    Meta,
}

/// A checkpoint read into memory.
#[derive(Debug)]
pub struct Checkpoint {
    /// Where it was read from.
    pub path: PathBuf,
    /// Which format it had.
    pub format: Format,
    /// The model's hyper-parameters.
    pub config: LlamaConfig,
    /// Its tensors under HF names.
    pub weights: Weights,
    /// GGUF metadata (tokenizer, chat template), for GGUF files.
    pub gguf_metadata: Option<gguf::Metadata>,
}

/// Recognises the format of `path`.
pub fn detect(path: &Path) -> Result<Format> {
    if path.is_file() {
        let mut magic = [0u8; 4];
        use std::io::Read;
        std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .map_err(|e| Error::io(path, e))?;
        if &magic == b"GGUF" {
            return Ok(Format::Gguf);
        }
        return Err(Error::format(
            path,
            "not a GGUF file (a model is a .gguf file, an HF folder or a Meta folder)",
        ));
    }
    if path.join("config.json").exists() {
        return Ok(Format::Hf);
    }
    if path.join("params.json").exists() {
        return Ok(Format::Meta);
    }
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        ));
    }
    Err(Error::format(
        path,
        "no config.json (HF) or params.json (Meta) in this folder",
    ))
}

/// Reads the checkpoint at `path` (GGUF file, HF folder or Meta folder) onto `device`.
pub fn load(path: &Path, device: &Device) -> Result<Checkpoint> {
    let format = detect(path)?;
    let (config, weights, gguf_metadata) = match format {
        Format::Hf => {
            let (c, w) = hf::load(path, device)?;
            (c, w, None)
        }
        Format::Meta => {
            let (c, w) = meta::load(path, device)?;
            (c, w, None)
        }
        Format::Gguf => {
            let (c, w, m) = gguf::load(path, device)?;
            (c, w, Some(m))
        }
    };
    Ok(Checkpoint {
        path: path.to_path_buf(),
        format,
        config,
        weights,
        gguf_metadata,
    })
}

//! GGUF checkpoints of the `llama` architecture (llama.cpp's format): hyper-parameters from the
//! metadata, tensors renamed to HF names, query/key rows permuted from llama.cpp's adjacent-pair
//! RoPE layout to the half-split one. Quantized tensors and F16 matrices stay as stored (herd's
//! kernels multiply them as they are); F32/BF16 tensors and F16 vectors become dense. The
//! metadata (with the embedded tokenizer and chat template) is returned too.

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;
use candle_core::Device;

use crate::checkpoint::gguf_file::GgufFile;
use crate::checkpoint::permute::meta_to_half_split;
use crate::config::{LlamaConfig, RopeScaling};
use crate::error::{Error, Result};
use crate::weights::{Weight, Weights};

/// GGUF metadata: key → value, as stored in the file.
pub type Metadata = std::collections::HashMap<String, Value>;

/// Reads the metadata of a GGUF file (the tensors are mapped, not read).
pub fn read_metadata(path: &Path) -> Result<Metadata> {
    Ok(GgufFile::open(path)?.metadata)
}

/// Loads a llama-architecture GGUF onto `device`.
pub fn load(path: &Path, device: &Device) -> Result<(LlamaConfig, Weights, Metadata)> {
    let file = GgufFile::open(path)?;
    let config = config_from_metadata(path, &file)?;
    let mut weights = Weights::new(path);
    for (gguf_name, info) in &file.tensors {
        let Some(name) = hf_name(gguf_name) else {
            continue;
        };
        let qtensor = file.tensor(gguf_name, device)?;
        let weight = match info.dtype {
            GgmlDType::F16 if info.dims.len() == 2 => Weight::Quantized(Arc::new(qtensor)),
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                Weight::Dense(qtensor.dequantize(device)?)
            }
            _ => Weight::Quantized(Arc::new(qtensor)),
        };
        let weight = meta_to_half_split(&name, weight, &config)?;
        weights.insert(name, weight);
    }
    Ok((config, weights, file.metadata))
}

/// HF name of a llama.cpp tensor name; `None` for tensors herd does not use (`rope_freqs`).
fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, tensor) = rest.split_once('.')?;
    let hf = match tensor {
        "attn_norm.weight" => "input_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}"))
}

fn config_from_metadata(path: &Path, file: &GgufFile) -> Result<LlamaConfig> {
    let md = &file.metadata;
    let arch = md
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
        .unwrap_or("(none)");
    if arch != "llama" {
        return Err(Error::format(
            path,
            format!("architecture `{arch}` is not supported (herd runs `llama` GGUFs)"),
        ));
    }
    let get = |key: &str| md.get(&format!("llama.{key}"));
    let int = |key: &str| -> Result<usize> {
        get(key)
            .and_then(|v| {
                v.to_u32()
                    .ok()
                    .map(|x| x as usize)
                    .or_else(|| v.to_u64().ok().map(|x| x as usize))
            })
            .ok_or_else(|| Error::format(path, format!("metadata `llama.{key}` is missing")))
    };
    // GGUF stores f32; read it back as the decimal it was written from (1e-5, not 9.9999997e-6).
    let float = |key: &str| {
        get(key)
            .and_then(|v| v.to_f32().ok())
            .map(|x| x.to_string().parse::<f64>().unwrap_or(x as f64))
    };
    let dim = int("embedding_length")?;
    let n_heads = int("attention.head_count")?;
    let head_dim = int("attention.key_length")
        .or_else(|_| int("rope.dimension_count"))
        .unwrap_or(dim / n_heads.max(1));
    let vocab_size = match int("vocab_size") {
        Ok(v) => v,
        Err(_) => md
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .map(Vec::len)
            .ok_or_else(|| {
                Error::format(
                    path,
                    "neither `llama.vocab_size` nor `tokenizer.ggml.tokens`",
                )
            })?,
    };
    let rope_scaling = if file.info("rope_freqs.weight").is_some() {
        let factors = file
            .tensor("rope_freqs.weight", &Device::Cpu)?
            .dequantize(&Device::Cpu)
            .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
            .map_err(|e| Error::format(path, format!("tensor `rope_freqs.weight`: {e}")))?;
        Some(RopeScaling::FreqFactors {
            factors: factors.into_iter().map(f64::from).collect(),
        })
    } else {
        match get("rope.scaling.type")
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
        {
            Some("linear") => Some(RopeScaling::Linear {
                factor: float("rope.scaling.factor").unwrap_or(1.0),
            }),
            None | Some("none") => None,
            Some(other) => {
                return Err(Error::format(
                    path,
                    format!("rope scaling `{other}` is not supported"),
                ))
            }
        }
    };
    let config = LlamaConfig {
        vocab_size,
        dim,
        n_layers: int("block_count")?,
        n_heads,
        n_kv_heads: int("attention.head_count_kv").unwrap_or(n_heads),
        head_dim,
        ffn_dim: int("feed_forward_length")?,
        norm_eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
        rope_theta: float("rope.freq_base").unwrap_or(10_000.0),
        rope_scaling,
        max_seq_len: int("context_length").unwrap_or(8192),
        tie_embeddings: file.info("output.weight").is_none(),
    };
    config
        .validate()
        .map_err(|m| Error::format(path, format!("bad hyper-parameters: {m}")))?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_hf() {
        assert_eq!(
            hf_name("blk.12.attn_q.weight").unwrap(),
            "model.layers.12.self_attn.q_proj.weight"
        );
        assert_eq!(
            hf_name("token_embd.weight").unwrap(),
            "model.embed_tokens.weight"
        );
        assert!(hf_name("rope_freqs.weight").is_none());
    }
}

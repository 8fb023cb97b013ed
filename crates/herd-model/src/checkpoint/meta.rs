//! Meta's own checkpoints: `params.json` plus `consolidated.NN.pth` (PyTorch pickles, one per
//! model-parallel rank, bf16), as `llama_models` writes them. Tensors are renamed to HF names,
//! model-parallel shards are concatenated along the dimension each layer splits, and query/key
//! rows are permuted from Meta's adjacent-pair RoPE layout to the half-split one.

use std::path::{Path, PathBuf};

use candle_core::pickle::PthTensors;
use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::checkpoint::permute::meta_to_half_split;
use crate::config::{LlamaConfig, LLAMA31_SCALING};
use crate::error::{Error, Result};
use crate::weights::{Weight, Weights};

/// The fields of Meta's `params.json` (`llama_models` `ModelArgs`).
#[derive(Debug, Deserialize)]
struct Params {
    dim: usize,
    n_layers: usize,
    n_heads: usize,
    n_kv_heads: Option<usize>,
    vocab_size: usize,
    #[serde(default = "default_multiple_of")]
    multiple_of: usize,
    ffn_dim_multiplier: Option<f64>,
    #[serde(default = "default_eps")]
    norm_eps: f64,
    #[serde(default = "default_theta")]
    rope_theta: f64,
    #[serde(default)]
    use_scaled_rope: bool,
}

fn default_multiple_of() -> usize {
    256
}
fn default_eps() -> f64 {
    1e-5
}
fn default_theta() -> f64 {
    500_000.0
}

/// SwiGLU hidden size as `llama_models` derives it from `dim`, `multiple_of` and
/// `ffn_dim_multiplier`.
pub fn ffn_dim(dim: usize, multiple_of: usize, ffn_dim_multiplier: Option<f64>) -> usize {
    let mut hidden = 2 * (4 * dim) / 3;
    if let Some(m) = ffn_dim_multiplier {
        hidden = (m * hidden as f64) as usize;
    }
    multiple_of * hidden.div_ceil(multiple_of)
}

/// Reads `params.json`. Meta's reference code applies its Llama 3.1 scaling (factor 8) whenever
/// `use_scaled_rope` is set.
pub fn read_params(path: &Path) -> Result<LlamaConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let p: Params = serde_json::from_str(&text)
        .map_err(|e| Error::format(path, format!("not a Meta params.json: {e}")))?;
    let n_kv_heads = p.n_kv_heads.unwrap_or(p.n_heads);
    let config = LlamaConfig {
        vocab_size: p.vocab_size,
        dim: p.dim,
        n_layers: p.n_layers,
        n_heads: p.n_heads,
        n_kv_heads,
        head_dim: p.dim / p.n_heads.max(1),
        ffn_dim: ffn_dim(p.dim, p.multiple_of, p.ffn_dim_multiplier),
        norm_eps: p.norm_eps,
        rope_theta: p.rope_theta,
        rope_scaling: p.use_scaled_rope.then_some(LLAMA31_SCALING),
        max_seq_len: if p.use_scaled_rope { 131_072 } else { 8192 },
        tie_embeddings: false,
    };
    config.validate().map_err(|m| Error::format(path, m))?;
    Ok(config)
}

/// How a tensor is split across model-parallel ranks: the dimension to concatenate, or `None`
/// when every rank holds a copy.
fn shard_dim(meta_name: &str) -> Option<usize> {
    let leaf = meta_name.rsplit('.').nth(1).unwrap_or("");
    match leaf {
        "tok_embeddings" => Some(1),
        "output" | "wq" | "wk" | "wv" | "w1" | "w3" => Some(0),
        "wo" | "w2" => Some(1),
        _ => None,
    }
}

/// HF name of a Meta tensor name; `None` for tensors herd does not use.
fn hf_name(meta: &str) -> Option<String> {
    match meta {
        "tok_embeddings.weight" => return Some("model.embed_tokens.weight".into()),
        "norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = meta.strip_prefix("layers.")?;
    let (layer, tensor) = rest.split_once('.')?;
    let hf = match tensor {
        "attention.wq.weight" => "self_attn.q_proj.weight",
        "attention.wk.weight" => "self_attn.k_proj.weight",
        "attention.wv.weight" => "self_attn.v_proj.weight",
        "attention.wo.weight" => "self_attn.o_proj.weight",
        "feed_forward.w1.weight" => "mlp.gate_proj.weight",
        "feed_forward.w3.weight" => "mlp.up_proj.weight",
        "feed_forward.w2.weight" => "mlp.down_proj.weight",
        "attention_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}"))
}

/// The `consolidated.NN.pth` files of a folder, in rank order.
fn shard_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("consolidated.") && name.ends_with(".pth")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::format(
            dir,
            "no consolidated.*.pth file in this folder",
        ));
    }
    Ok(files)
}

/// Loads `params.json` and the `consolidated.*.pth` shards of a Meta checkpoint folder.
pub fn load(dir: &Path, device: &Device) -> Result<(LlamaConfig, Weights)> {
    let config = read_params(&dir.join("params.json"))?;
    let files = shard_files(dir)?;
    let shards = files
        .iter()
        .map(|f| {
            PthTensors::new(f, None)
                .map_err(|e| Error::format(f, format!("not a readable PyTorch checkpoint: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut weights = Weights::new(dir);
    let mut names: Vec<String> = shards[0].tensor_infos().keys().cloned().collect();
    names.sort();
    for meta_name in names {
        let Some(name) = hf_name(&meta_name) else {
            continue;
        };
        let mut parts = Vec::with_capacity(shards.len());
        for (file, shard) in files.iter().zip(&shards) {
            let tensor = shard
                .get(&meta_name)
                .map_err(|e| Error::format(file, format!("tensor `{meta_name}`: {e}")))?
                .ok_or_else(|| Error::MissingTensor {
                    path: file.clone(),
                    name: meta_name.clone(),
                })?;
            parts.push(tensor.to_device(device)?);
        }
        let tensor = match shard_dim(&meta_name) {
            Some(dim) if parts.len() > 1 => Tensor::cat(&parts, dim)?,
            _ => parts.swap_remove(0),
        };
        let weight = Weight::Dense(tensor);
        let weight = meta_to_half_split(&name, weight, &config)?;
        weights.insert(name, weight);
    }
    Ok((config, weights))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffn_dims_of_meta_models() {
        // Llama 3 8B: dim 4096, multiple_of 1024, multiplier 1.3 → 14,336.
        assert_eq!(ffn_dim(4096, 1024, Some(1.3)), 14_336);
        // 70B: dim 8192, multiple_of 4096, multiplier 1.3 → 28,672.
        assert_eq!(ffn_dim(8192, 4096, Some(1.3)), 28_672);
        // 405B: dim 16384, multiple_of 4096, multiplier 1.2 → 53,248.
        assert_eq!(ffn_dim(16_384, 4096, Some(1.2)), 53_248);
    }

    #[test]
    fn shards_split_like_fairscale() {
        assert_eq!(shard_dim("layers.3.attention.wo.weight"), Some(1));
        assert_eq!(shard_dim("layers.3.attention.wq.weight"), Some(0));
        assert_eq!(shard_dim("tok_embeddings.weight"), Some(1));
        assert_eq!(shard_dim("layers.3.ffn_norm.weight"), None);
        assert_eq!(
            hf_name("layers.3.feed_forward.w3.weight").unwrap(),
            "model.layers.3.mlp.up_proj.weight"
        );
    }
}

//! Hugging Face checkpoints: `config.json` of `LlamaForCausalLM` (transformers 4.x spelling with
//! `rope_theta` + `rope_scaling`, and 5.x with `rope_parameters`) and safetensors weights, single
//! file or sharded with `model.safetensors.index.json`. HF names are herd's own, so this adapter
//! renames nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use serde_json::{json, Value};

use herd_util::fs::write_atomic;

use crate::config::{LlamaConfig, RopeScaling};
use crate::error::{Error, Result};
use crate::weights::{Weight, Weights};

/// The fields of an HF `config.json` that describe a Llama model.
#[derive(Debug, Deserialize)]
struct HfConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    max_position_embeddings: Option<usize>,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    hidden_act: Option<String>,
}

fn default_eps() -> f64 {
    1e-6
}

/// Reads a `config.json` of `LlamaForCausalLM`.
pub fn read_config(path: &Path) -> Result<LlamaConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_config(&text).map_err(|m| Error::format(path, m))
}

/// Parses the text of an HF Llama `config.json`.
pub fn parse_config(text: &str) -> std::result::Result<LlamaConfig, String> {
    let hf: HfConfig =
        serde_json::from_str(text).map_err(|e| format!("not a Llama config.json: {e}"))?;
    if hf.attention_bias || hf.mlp_bias {
        return Err(
            "attention_bias/mlp_bias are not Llama 3 (herd supports bias-free models)".into(),
        );
    }
    if let Some(act) = hf.hidden_act.as_deref().filter(|a| *a != "silu") {
        return Err(format!(
            "hidden_act `{act}` is not supported (Llama uses silu)"
        ));
    }
    // transformers 5.x keeps θ inside rope_parameters; 4.x has rope_theta beside rope_scaling.
    let rope = hf.rope_parameters.as_ref().or(hf.rope_scaling.as_ref());
    let theta = hf
        .rope_theta
        .or_else(|| {
            rope.and_then(|r| r.get("rope_theta"))
                .and_then(Value::as_f64)
        })
        .unwrap_or(10_000.0);
    let rope_scaling = match rope {
        Some(r) if !r.is_null() => parse_rope_scaling(r)?,
        _ => None,
    };
    let config = LlamaConfig {
        vocab_size: hf.vocab_size,
        dim: hf.hidden_size,
        n_layers: hf.num_hidden_layers,
        n_heads: hf.num_attention_heads,
        n_kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
        head_dim: hf
            .head_dim
            .unwrap_or(hf.hidden_size / hf.num_attention_heads.max(1)),
        ffn_dim: hf.intermediate_size,
        norm_eps: hf.rms_norm_eps,
        rope_theta: theta,
        rope_scaling,
        max_seq_len: hf.max_position_embeddings.unwrap_or(8192),
        tie_embeddings: hf.tie_word_embeddings,
    };
    config.validate()?;
    Ok(config)
}

fn parse_rope_scaling(r: &Value) -> std::result::Result<Option<RopeScaling>, String> {
    let kind = r
        .get("rope_type")
        .or_else(|| r.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |key: &str| -> std::result::Result<f64, String> {
        r.get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("rope scaling `{kind}` needs a number `{key}`"))
    };
    Ok(match kind {
        "default" => None,
        "linear" => Some(RopeScaling::Linear {
            factor: num("factor")?,
        }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_context: num("original_max_position_embeddings")? as usize,
        }),
        "herd_freq_factors" => Some(RopeScaling::FreqFactors {
            factors: r
                .get("factors")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .ok_or("rope scaling `herd_freq_factors` needs a list `factors`")?,
        }),
        other => {
            return Err(format!(
                "rope scaling type `{other}` is not supported (default, linear, llama3 are)"
            ))
        }
    })
}

/// The `config.json` (transformers 4.x spelling) of `config`.
pub fn config_json(config: &LlamaConfig, dtype: DType) -> Value {
    let rope_scaling = match &config.rope_scaling {
        None => Value::Null,
        Some(RopeScaling::Linear { factor }) => json!({"rope_type": "linear", "factor": factor}),
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_context,
        }) => json!({
            "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor, "original_max_position_embeddings": original_context,
        }),
        // HF has no per-frequency factors (llama.cpp's `rope_freqs`); herd reads this spelling back.
        Some(RopeScaling::FreqFactors { factors }) => {
            json!({"rope_type": "herd_freq_factors", "factors": factors})
        }
    };
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.dim,
        "intermediate_size": config.ffn_dim,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_dim,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": rope_scaling,
        "max_position_embeddings": config.max_seq_len,
        "tie_word_embeddings": config.tie_embeddings,
        "attention_bias": false,
        "mlp_bias": false,
        "hidden_act": "silu",
        "torch_dtype": match dtype { DType::BF16 => "bfloat16", DType::F16 => "float16", _ => "float32" },
    })
}

/// The safetensors files of an HF model folder: the shards listed by the index, or the
/// single `model.safetensors`.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let value: Value =
            serde_json::from_str(&text).map_err(|e| Error::format(&index, e.to_string()))?;
        let map = value
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::format(&index, "no `weight_map` object"))?;
        let mut files = Vec::new();
        for value in map.values() {
            let name = value
                .as_str()
                .ok_or_else(|| Error::format(&index, "a `weight_map` value is not a file name"))?;
            // Shards sit beside the index: a name that climbs out of the folder (`../../x`) or
            // is absolute would read files the model does not own.
            let plain = Path::new(name)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !plain || name.is_empty() {
                return Err(Error::format(
                    &index,
                    format!(
                        "`weight_map` names {:?}, which is not a file in this folder",
                        herd_util::text::printable(name)
                    ),
                ));
            }
            files.push(dir.join(name));
        }
        files.sort();
        files.dedup();
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(Error::format(
        dir,
        "no model.safetensors or model.safetensors.index.json in this folder",
    ))
}

/// Loads config and weights of an HF model folder onto `device`.
pub fn load(dir: &Path, device: &Device) -> Result<(LlamaConfig, Weights)> {
    let config = read_config(&dir.join("config.json"))?;
    let mut weights = Weights::new(dir);
    for file in weight_files(dir)? {
        let tensors = candle_core::safetensors::load(&file, device)
            .map_err(|e| Error::format(&file, format!("cannot read safetensors: {e}")))?;
        for (name, tensor) in tensors {
            weights.insert(name, Weight::Dense(tensor));
        }
    }
    Ok((config, weights))
}

/// Writes `weights` (dequantized, cast to `dtype`) and `config.json` into `dir` as an HF model
/// folder, in shards of at most `max_shard_bytes` with an index when more than one is needed.
/// Every file is written to a temporary name and renamed, so a crash leaves no half file.
pub fn save(
    dir: &Path,
    config: &LlamaConfig,
    weights: &Weights,
    dtype: DType,
    max_shard_bytes: usize,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut shards: Vec<BTreeMap<String, Tensor>> = vec![BTreeMap::new()];
    let mut shard_bytes = 0;
    for (name, weight) in weights.iter() {
        let tensor = weight.to_dense(dtype)?;
        let bytes = tensor.elem_count() * dtype.size_in_bytes();
        if shard_bytes > 0 && shard_bytes + bytes > max_shard_bytes {
            shards.push(BTreeMap::new());
            shard_bytes = 0;
        }
        shard_bytes += bytes;
        shards
            .last_mut()
            .expect("one shard")
            .insert(name.clone(), tensor);
    }
    let n = shards.len();
    let mut weight_map = BTreeMap::new();
    let mut total = 0usize;
    for (i, shard) in shards.iter().enumerate() {
        let file = if n == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{n:05}.safetensors", i + 1)
        };
        let path = dir.join(&file);
        let tmp = dir.join(format!(".{file}.tmp"));
        let map: HashMap<String, Tensor> = shard.clone().into_iter().collect();
        candle_core::safetensors::save(&map, &tmp)
            .map_err(|e| Error::format(&tmp, e.to_string()))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        for (name, t) in shard {
            weight_map.insert(name.clone(), file.clone());
            total += t.elem_count() * dtype.size_in_bytes();
        }
    }
    if n > 1 {
        let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        write_atomic(
            &dir.join("model.safetensors.index.json"),
            &serde_json::to_vec_pretty(&index).expect("json"),
        )?;
    }
    let config = serde_json::to_vec_pretty(&config_json(config, dtype)).expect("json");
    Ok(write_atomic(&dir.join("config.json"), &config)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA32_1B: &str = r#"{"architectures": ["LlamaForCausalLM"], "attention_bias": false,
      "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu",
      "hidden_size": 2048, "intermediate_size": 8192, "max_position_embeddings": 131072,
      "mlp_bias": false, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16,
      "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 32.0,
      "high_freq_factor": 4.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 8192,
      "rope_type": "llama3"}, "rope_theta": 500000.0, "tie_word_embeddings": true,
      "torch_dtype": "bfloat16", "vocab_size": 128256}"#;

    #[test]
    fn hub_config_of_llama32_1b_is_the_preset() {
        assert_eq!(
            parse_config(LLAMA32_1B).unwrap(),
            LlamaConfig::preset("llama3.2-1b").unwrap()
        );
    }

    #[test]
    fn written_config_reads_back() {
        let config = LlamaConfig::preset("llama3.1-8b").unwrap();
        let text = config_json(&config, DType::BF16).to_string();
        assert_eq!(parse_config(&text).unwrap(), config);
    }

    #[test]
    fn unsupported_configs_say_why() {
        let yarn = LLAMA32_1B.replace("\"llama3\"", "\"yarn\"");
        assert!(parse_config(&yarn).unwrap_err().contains("yarn"));
        let bias = LLAMA32_1B.replace("\"attention_bias\": false", "\"attention_bias\": true");
        assert!(parse_config(&bias).unwrap_err().contains("bias"));
    }

    #[test]
    fn an_index_may_not_name_files_outside_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["../../../etc/passwd", "/etc/passwd", "", "sub/../../x"] {
            let index = json!({"weight_map": {"model.norm.weight": name}});
            std::fs::write(
                dir.path().join("model.safetensors.index.json"),
                index.to_string(),
            )
            .unwrap();
            let err = weight_files(dir.path()).unwrap_err().to_string();
            assert!(err.contains("not a file in this folder"), "{name}: {err}");
        }
        let index = json!({"weight_map": {"a": "model-1.safetensors", "b": "model-1.safetensors"}});
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            index.to_string(),
        )
        .unwrap();
        assert_eq!(
            weight_files(dir.path()).unwrap(),
            [dir.path().join("model-1.safetensors")]
        );
    }
}

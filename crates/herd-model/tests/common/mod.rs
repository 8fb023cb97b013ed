//! Helpers shared by the checkpoint and fuzz tests.

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value as GgufValue};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::DType;
use herd_model::checkpoint::permute;
use herd_model::{LlamaConfig, Weights};

/// Writes `weights` as llama.cpp would: GGUF names, Q/K rows in Meta's adjacent-pair layout,
/// matrices in `dtype`.
pub fn write_gguf(path: &Path, config: &LlamaConfig, weights: &Weights, dtype: GgmlDType) {
    let gguf_name = |hf: &str| -> String {
        let fixed = [
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("model.norm.weight", "output_norm.weight"),
            ("lm_head.weight", "output.weight"),
        ];
        if let Some((_, g)) = fixed.iter().find(|(h, _)| *h == hf) {
            return g.to_string();
        }
        let rest = hf.strip_prefix("model.layers.").unwrap();
        let (layer, t) = rest.split_once('.').unwrap();
        let g = match t {
            "input_layernorm.weight" => "attn_norm",
            "post_attention_layernorm.weight" => "ffn_norm",
            "self_attn.q_proj.weight" => "attn_q",
            "self_attn.k_proj.weight" => "attn_k",
            "self_attn.v_proj.weight" => "attn_v",
            "self_attn.o_proj.weight" => "attn_output",
            "mlp.gate_proj.weight" => "ffn_gate",
            "mlp.up_proj.weight" => "ffn_up",
            "mlp.down_proj.weight" => "ffn_down",
            other => panic!("{other}"),
        };
        format!("blk.{layer}.{g}.weight")
    };
    let mut tensors = Vec::new();
    for (name, weight) in weights.iter() {
        let weight = if name.ends_with("q_proj.weight") {
            permute::select_rows(
                weight,
                &permute::meta_rows_from_hf(config.n_heads, config.head_dim),
            )
            .unwrap()
        } else if name.ends_with("k_proj.weight") {
            permute::select_rows(
                weight,
                &permute::meta_rows_from_hf(config.n_kv_heads, config.head_dim),
            )
            .unwrap()
        } else {
            weight.clone()
        };
        let dense = weight.to_dense(DType::F32).unwrap();
        let q = if dense.rank() == 2 {
            QTensor::quantize(&dense, dtype).unwrap()
        } else {
            QTensor::quantize(&dense, GgmlDType::F32).unwrap()
        };
        tensors.push((gguf_name(name), q));
    }
    let u32v = |v: usize| GgufValue::U32(v as u32);
    let metadata = vec![
        ("general.architecture", GgufValue::String("llama".into())),
        ("llama.embedding_length", u32v(config.dim)),
        ("llama.block_count", u32v(config.n_layers)),
        ("llama.feed_forward_length", u32v(config.ffn_dim)),
        ("llama.attention.head_count", u32v(config.n_heads)),
        ("llama.attention.head_count_kv", u32v(config.n_kv_heads)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            GgufValue::F32(config.norm_eps as f32),
        ),
        (
            "llama.rope.freq_base",
            GgufValue::F32(config.rope_theta as f32),
        ),
        ("llama.vocab_size", u32v(config.vocab_size)),
        ("llama.context_length", u32v(config.max_seq_len)),
    ];
    let md: Vec<(&str, &GgufValue)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut file, &md, &ts).unwrap();
}

//! Deterministic weights from one seeded generator, bit-identical to
//! `tools/fixtures/seeded_weights.py`, so reference fixtures store only inputs and outputs:
//! both sides rebuild the same random model.
//!
//! Each tensor draws from its own splitmix64 stream seeded with the FNV-1a hash of its HF name;
//! values fill it in row-major order. `r = 2u − 1` with `u` the top 24 bits of a draw. Linear
//! weights are `r·√(3/in_features)`, embeddings `r`, RMSNorm weights `1 + 0.1·r`.

use candle_core::{Device, Tensor};

use herd_util::seeded::{fnv1a64, splitmix64};

use crate::config::LlamaConfig;
use crate::llama::tensor_shapes;
use crate::weights::{Weight, Weights};

/// The values of the tensor `name` of shape `dims` (`[out, in]` for matrices).
pub fn tensor_values(name: &str, dims: &[usize]) -> Vec<f32> {
    let mut state = fnv1a64(name.as_bytes());
    let n: usize = dims.iter().product();
    let r = move || {
        let u = (splitmix64(&mut state) >> 40) as f32 / 16_777_216.0;
        2.0 * u - 1.0
    };
    let mut r = r;
    if name.ends_with("norm.weight") {
        (0..n).map(|_| 1.0 + r() * 0.1f32).collect()
    } else if name == "model.embed_tokens.weight" {
        (0..n).map(|_| r()).collect()
    } else {
        let scale = (3.0f64 / dims[dims.len() - 1] as f64).sqrt() as f32;
        (0..n).map(|_| r() * scale).collect()
    }
}

/// The shape of a one-layer test model that runs a case in about a millisecond (dimensions of
/// 32, so Q8_0 blocks fit; untied, no RoPE scaling). Tests set the vocabulary and context they
/// need over it.
pub fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 64,
        dim: 32,
        n_layers: 1,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 16,
        ffn_dim: 64,
        max_seq_len: 64,
        rope_scaling: None,
        tie_embeddings: false,
        ..LlamaConfig::preset("llama3.2-1b").expect("a built-in preset")
    }
}

/// The shape of a two-layer test model with grouped-query attention (4 query heads on 2 KV
/// heads), for tests of attention and batching.
pub fn small_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 96,
        dim: 64,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
        ffn_dim: 128,
        max_seq_len: 256,
        ..tiny_config()
    }
}

/// Every tensor of a model of shape `config`, under HF names, in f32.
pub fn weights(config: &LlamaConfig, device: &Device) -> candle_core::Result<Weights> {
    let mut weights = Weights::new("<seeded>");
    for (name, dims) in tensor_shapes(config) {
        let values = tensor_values(&name, &dims);
        weights.insert(name, Weight::Dense(Tensor::from_vec(values, dims, device)?));
    }
    Ok(weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_values_match_the_python_generator() {
        let bits = |v: Vec<f32>| v.iter().take(4).map(|x| x.to_bits()).collect::<Vec<_>>();
        let embed = tensor_values("model.embed_tokens.weight", &[4, 1]);
        assert_eq!(
            bits(embed),
            [0xbe83cc70, 0xbeb84d28, 0x3cd9aa40, 0xbf00cc36]
        );
        let q = tensor_values("model.layers.0.self_attn.q_proj.weight", &[1, 64]);
        assert_eq!(bits(q), [0xbd0f20f7, 0xbe400542, 0x3e1e1cd8, 0xbcbac195]);
        let head = tensor_values("lm_head.weight", &[1, 64]);
        assert_eq!(bits(head), [0x3e5a804a, 0x3e56ef30, 0xbe4b2576, 0xbd08f64f]);
    }
}

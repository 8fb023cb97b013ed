//! The query/key row permutation between Meta's RoPE layout and HF's.
//!
//! Meta's reference code (and llama.cpp, hence GGUF) rotates *adjacent* feature pairs
//! `(2i, 2i+1)` of each head; HF checkpoints rotate `(i, i + head_dim/2)`. The two are the same
//! model once the rows of `wq`/`wk` are permuted: HF row `h·d + c·d/2 + i` is Meta row
//! `h·d + 2i + c`. Quantized tensors are permuted row by row on their raw blocks, which lie
//! inside rows, so nothing is dequantized.

use std::sync::Arc;

use candle_core::quantized::{ggml_file::qtensor_from_ggml, QTensor};
use candle_core::{Result, Tensor};

use crate::config::LlamaConfig;
use crate::weights::Weight;

/// For each HF row, the Meta row it comes from.
pub fn hf_rows_from_meta(n_heads: usize, head_dim: usize) -> Vec<u32> {
    let half = head_dim / 2;
    let mut rows = Vec::with_capacity(n_heads * head_dim);
    for h in 0..n_heads {
        for c in 0..2 {
            for i in 0..half {
                rows.push((h * head_dim + 2 * i + c) as u32);
            }
        }
    }
    rows
}

/// For each Meta row, the HF row it comes from (the inverse permutation).
pub fn meta_rows_from_hf(n_heads: usize, head_dim: usize) -> Vec<u32> {
    let forward = hf_rows_from_meta(n_heads, head_dim);
    let mut inverse = vec![0u32; forward.len()];
    for (hf, &meta) in forward.iter().enumerate() {
        inverse[meta as usize] = hf as u32;
    }
    inverse
}

/// Reorders the rows (first dimension) of a weight: row `r` of the result is row `rows[r]`.
pub fn select_rows(weight: &Weight, rows: &[u32]) -> Result<Weight> {
    Ok(match weight {
        Weight::Dense(t) => {
            let index = Tensor::new(rows, t.device())?;
            Weight::Dense(t.index_select(&index, 0)?)
        }
        Weight::Quantized(q) => Weight::Quantized(Arc::new(select_quantized_rows(q, rows)?)),
    })
}

fn select_quantized_rows(q: &QTensor, rows: &[u32]) -> Result<QTensor> {
    let dims = q.shape().dims().to_vec();
    let dtype = q.dtype();
    let data = q.data()?;
    let row_bytes = data.len() / dims[0];
    if row_bytes * dims[0] != data.len() || rows.len() != dims[0] {
        candle_core::bail!("cannot permute rows of a {dtype:?} tensor of shape {dims:?}");
    }
    let mut out = Vec::with_capacity(data.len());
    for &r in rows {
        let start = r as usize * row_bytes;
        out.extend_from_slice(&data[start..start + row_bytes]);
    }
    qtensor_from_ggml(dtype, &out, dims, &q.device())
}

/// A weight read from a Meta-layout checkpoint (Meta `.pth`, GGUF) in herd's half-split layout:
/// query and key projections get their rows permuted, every other tensor is unchanged.
pub fn meta_to_half_split(hf_name: &str, weight: Weight, config: &LlamaConfig) -> Result<Weight> {
    if hf_name.ends_with("q_proj.weight") {
        select_rows(&weight, &hf_rows_from_meta(config.n_heads, config.head_dim))
    } else if hf_name.ends_with("k_proj.weight") {
        select_rows(
            &weight,
            &hf_rows_from_meta(config.n_kv_heads, config.head_dim),
        )
    } else {
        Ok(weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;
    use candle_core::Device;

    #[test]
    fn permutation_matches_hf_conversion_script() {
        // transformers' convert_llama_weights_to_hf `permute`: view(n, d/2, 2, dim).transpose(1, 2)
        assert_eq!(hf_rows_from_meta(1, 4), vec![0, 2, 1, 3]);
        assert_eq!(hf_rows_from_meta(2, 4), vec![0, 2, 1, 3, 4, 6, 5, 7]);
        let there = hf_rows_from_meta(3, 8);
        let back = meta_rows_from_hf(3, 8);
        for (i, &b) in back.iter().enumerate() {
            assert_eq!(there[b as usize] as usize, i);
        }
    }

    #[test]
    fn quantized_rows_move_whole() {
        let dev = Device::Cpu;
        let dense = Tensor::arange(0f32, 4.0 * 64.0, &dev)
            .unwrap()
            .reshape((4, 64))
            .unwrap();
        let q = Arc::new(QTensor::quantize(&dense, GgmlDType::Q8_0).unwrap());
        let rows = [2u32, 0, 3, 1];
        let permuted = select_rows(&Weight::Quantized(q.clone()), &rows).unwrap();
        let expected = q
            .dequantize(&dev)
            .unwrap()
            .index_select(&Tensor::new(&rows, &dev).unwrap(), 0)
            .unwrap();
        let got = permuted.to_dense(candle_core::DType::F32).unwrap();
        let diff = (got - expected)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0);
    }
}

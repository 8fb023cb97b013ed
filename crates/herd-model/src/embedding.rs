//! The token embedding table. Dense tables are indexed as tensors; tables in a GGUF block format
//! stay in it and only the rows looked up are dequantized: in f32, SmolLM2's Q8_0 table would grow
//! from 30 MB to 113 MB and Llama 3 8B's from 0.5 GB to 2 GB, all to read one row per token.

use std::sync::Arc;

use candle_core::quantized::{ggml_file::qtensor_from_ggml, QTensor};
use candle_core::{DType, Result, Tensor};

use crate::weights::Weight;

/// A `[vocab, dim]` table of token vectors.
#[derive(Debug, Clone)]
pub enum Embedding {
    /// Cast to the model's dtype.
    Dense(Tensor),
    /// As stored, with the dtype looked-up rows are cast to.
    Quantized { table: Arc<QTensor>, dtype: DType },
}

impl Embedding {
    /// The table for `weight`, dense ones cast to `dtype`.
    pub fn new(weight: &Weight, dtype: DType) -> Result<Embedding> {
        Ok(match weight {
            Weight::Dense(t) => Embedding::Dense(t.to_dtype(dtype)?),
            Weight::Quantized(q) => Embedding::Quantized {
                table: q.clone(),
                dtype,
            },
        })
    }

    /// The rows of `ids` (a flat u32 tensor), `[ids, dim]`.
    pub fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        let (table, dtype) = match self {
            Embedding::Dense(t) => return t.index_select(ids, 0),
            Embedding::Quantized { table, dtype } => (table, *dtype),
        };
        let [vocab, dim] = *table.shape().dims() else {
            candle_core::bail!("the embedding table is not a matrix: {:?}", table.shape());
        };
        let data = table.data()?;
        let row_bytes = data.len() / vocab;
        let ids = ids.to_vec1::<u32>()?;
        let mut rows = Vec::with_capacity(ids.len() * row_bytes);
        for &id in &ids {
            let id = id as usize;
            if id >= vocab {
                candle_core::bail!("token id {id} is outside the vocabulary of {vocab}");
            }
            rows.extend_from_slice(&data[id * row_bytes..(id + 1) * row_bytes]);
        }
        let device = table.device();
        qtensor_from_ggml(table.dtype(), &rows, vec![ids.len(), dim], &device)?
            .dequantize(&device)?
            .to_dtype(dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;
    use candle_core::Device;

    #[test]
    fn quantized_rows_are_the_dequantized_tables_rows() {
        let dev = Device::Cpu;
        let dense = Tensor::randn(0f32, 1.0, (10, 64), &dev).unwrap();
        let q = Arc::new(QTensor::quantize(&dense, GgmlDType::Q8_0).unwrap());
        let full = q.dequantize(&dev).unwrap();
        let ids = Tensor::new(&[3u32, 0, 9, 3], &dev).unwrap();
        let table = Embedding::new(&Weight::Quantized(q), DType::F32).unwrap();
        let got = table.lookup(&ids).unwrap();
        let expected = full.index_select(&ids, 0).unwrap();
        assert_eq!(
            got.to_vec2::<f32>().unwrap(),
            expected.to_vec2::<f32>().unwrap()
        );
        let err = table
            .lookup(&Tensor::new(&[10u32], &dev).unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("token id 10"), "{err}");
    }
}

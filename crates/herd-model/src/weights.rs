//! A named set of weight tensors, float or quantized, as read from a checkpoint.
//!
//! Checkpoint adapters fill a [`Weights`] under HF tensor names (`model.layers.0.self_attn.q_proj.weight`)
//! with query/key rows in the half-split RoPE layout; the model takes its tensors out by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// One weight tensor: dense, or quantized in a GGUF block format.
#[derive(Debug, Clone)]
pub enum Weight {
    /// A dense tensor (f32, f16 or bf16).
    Dense(Tensor),
    /// A tensor in a ggml block-quantized format (Q4_0, Q4_1, Q8_0, K-quants…).
    Quantized(Arc<QTensor>),
}

impl Weight {
    /// The tensor's shape (outermost dimension first).
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Weight::Dense(t) => t.dims().to_vec(),
            Weight::Quantized(q) => q.shape().dims().to_vec(),
        }
    }

    /// The weight as a dense tensor of `dtype` (dequantizing if needed).
    pub fn to_dense(&self, dtype: DType) -> candle_core::Result<Tensor> {
        match self {
            Weight::Dense(t) => t.to_dtype(dtype),
            Weight::Quantized(q) => q.dequantize(&q.device())?.to_dtype(dtype),
        }
    }

    /// The weight as a matmul operand: quantized weights stay quantized, dense ones are cast.
    pub fn to_matmul(&self, dtype: DType) -> candle_core::Result<QMatMul> {
        Ok(match self {
            Weight::Dense(t) => QMatMul::Tensor(t.to_dtype(dtype)?),
            Weight::Quantized(q) => QMatMul::from_arc(q.clone())?,
        })
    }
}

/// Weight tensors by HF name, with the file they came from for error messages.
#[derive(Debug, Default)]
pub struct Weights {
    source: PathBuf,
    tensors: BTreeMap<String, Weight>,
}

impl Weights {
    /// An empty set read from `source`.
    pub fn new(source: impl Into<PathBuf>) -> Weights {
        Weights {
            source: source.into(),
            tensors: BTreeMap::new(),
        }
    }

    /// The checkpoint file or folder the weights come from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Adds (or replaces) a tensor.
    pub fn insert(&mut self, name: impl Into<String>, weight: Weight) {
        self.tensors.insert(name.into(), weight);
    }

    /// Whether a tensor of that name is present.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Expands every quantized tensor to dense f32, so the model computes with the exact values
    /// the blocks encode (as tools that dequantize on load do, transformers among them) instead
    /// of herd's quantized kernels with their rounded activations.
    pub fn dequantize(&mut self) -> Result<()> {
        for weight in self.tensors.values_mut() {
            if let Weight::Quantized(q) = weight {
                *weight = Weight::Dense(q.dequantize(&q.device())?);
            }
        }
        Ok(())
    }

    /// Names and weights, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Weight)> {
        self.tensors.iter()
    }

    /// The tensor `name`, checked to have shape `dims`.
    pub fn get(&self, name: &str, dims: &[usize]) -> Result<&Weight> {
        let weight = self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.source.clone(),
            name: name.to_string(),
        })?;
        let got = weight.dims();
        if got != dims {
            return Err(Error::Shape {
                path: self.source.clone(),
                name: name.to_string(),
                expected: dims.to_vec(),
                got,
            });
        }
        Ok(weight)
    }
}

//! The shape of a Llama 3 model (paper §3.2, Table 3) and the named presets of the herd.
//!
//! One typed config describes every Llama 3.x model; checkpoint adapters translate their own
//! config files (HF `config.json`, Meta `params.json`, GGUF metadata) into it.

use serde::{Deserialize, Serialize};

/// Hyper-parameters of a dense Llama 3 decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Vocabulary size (128,256 for Meta's tokenizer).
    pub vocab_size: usize,
    /// Model (residual stream) dimension.
    pub dim: usize,
    /// Number of Transformer blocks.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention; 8 for every Llama 3 model).
    pub n_kv_heads: usize,
    /// Dimension of one attention head.
    pub head_dim: usize,
    /// Hidden dimension of the SwiGLU feed-forward network.
    pub ffn_dim: usize,
    /// RMSNorm epsilon.
    pub norm_eps: f64,
    /// RoPE base frequency θ (500,000 in Llama 3).
    pub rope_theta: f64,
    /// Frequency scaling for long context (Llama 3.1 "llama3" scaling), if any.
    pub rope_scaling: Option<RopeScaling>,
    /// Longest context the model was trained for.
    pub max_seq_len: usize,
    /// Whether the output projection shares the input embedding matrix (Llama 3.2 1B/3B).
    pub tie_embeddings: bool,
}

/// How RoPE frequencies are rescaled to reach a longer context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RopeScaling {
    /// Llama 3.1: low frequencies divided by `factor`, high ones kept, a smooth ramp between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_context: usize,
    },
    /// Every frequency divided by `factor` (position interpolation).
    Linear { factor: f64 },
    /// Per-frequency divisors as stored by llama.cpp in a GGUF's `rope_freqs.weight`.
    FreqFactors { factors: Vec<f64> },
}

/// The Llama 3.1 scaling every Llama 3.1 checkpoint uses (paper §3.2; `llama_models` `apply_scaling`).
pub const LLAMA31_SCALING: RopeScaling = RopeScaling::Llama3 {
    factor: 8.0,
    low_freq_factor: 1.0,
    high_freq_factor: 4.0,
    original_context: 8192,
};

/// Names accepted by [`LlamaConfig::preset`].
pub const PRESET_NAMES: &[&str] = &[
    "llama3-8b",
    "llama3-70b",
    "llama3.1-8b",
    "llama3.1-70b",
    "llama3.1-405b",
    "llama3.2-1b",
    "llama3.2-3b",
];

impl LlamaConfig {
    /// The model shapes of the paper's Table 3 and the Llama 3.2 model cards.
    pub fn preset(name: &str) -> Option<LlamaConfig> {
        let base = |dim, n_layers, n_heads, ffn_dim, head_dim| LlamaConfig {
            vocab_size: 128_256,
            dim,
            n_layers,
            n_heads,
            n_kv_heads: 8,
            head_dim,
            ffn_dim,
            norm_eps: 1e-5,
            rope_theta: 500_000.0,
            rope_scaling: Some(LLAMA31_SCALING),
            max_seq_len: 131_072,
            tie_embeddings: false,
        };
        let llama3 = |c: LlamaConfig| LlamaConfig {
            rope_scaling: None,
            max_seq_len: 8192,
            ..c
        };
        let llama32 = |c: LlamaConfig| LlamaConfig {
            tie_embeddings: true,
            rope_scaling: Some(RopeScaling::Llama3 {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_context: 8192,
            }),
            ..c
        };
        Some(match name {
            "llama3-8b" => llama3(base(4096, 32, 32, 14_336, 128)),
            "llama3-70b" => llama3(base(8192, 80, 64, 28_672, 128)),
            "llama3.1-8b" => base(4096, 32, 32, 14_336, 128),
            "llama3.1-70b" => base(8192, 80, 64, 28_672, 128),
            "llama3.1-405b" => base(16_384, 126, 128, 53_248, 128),
            "llama3.2-1b" => llama32(base(2048, 16, 32, 8192, 64)),
            "llama3.2-3b" => llama32(base(3072, 28, 24, 8192, 128)),
            _ => return None,
        })
    }

    /// Query heads that share one key/value head.
    pub fn group_size(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// Checks every field and the relations between them that the model relies on. Sizes have
    /// upper bounds far above any released model (the 405B model has `dim` 16,384 and 126
    /// layers) so that a corrupt config is refused before it sizes an allocation or overflows
    /// a parameter count.
    pub fn validate(&self) -> Result<(), String> {
        use herd_util::check::{finite_above, within};
        let sizes = [
            ("vocab_size", self.vocab_size, 1 << 24),
            ("dim", self.dim, 1 << 16),
            ("n_layers", self.n_layers, 1024),
            ("n_heads", self.n_heads, 1024),
            ("n_kv_heads", self.n_kv_heads, 1024),
            ("head_dim", self.head_dim, 1024),
            ("ffn_dim", self.ffn_dim, 1 << 20),
            ("max_seq_len", self.max_seq_len, 1 << 24),
        ];
        for (name, value, max) in sizes {
            within(name, value, 1, max)?;
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(format!(
                "n_heads ({}) must be a multiple of n_kv_heads ({})",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!(
                "head_dim ({}) must be even for RoPE",
                self.head_dim
            ));
        }
        herd_util::check::finite_within("norm_eps", self.norm_eps, f64::MIN_POSITIVE, 1.0)?;
        finite_above("rope_theta", self.rope_theta, 1.0)?;
        match &self.rope_scaling {
            None => {}
            Some(RopeScaling::Linear { factor }) => finite_above("rope factor", *factor, 0.0)?,
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_context,
            }) => {
                finite_above("rope factor", *factor, 0.0)?;
                finite_above("low_freq_factor", *low_freq_factor, 0.0)?;
                finite_above("high_freq_factor", *high_freq_factor, *low_freq_factor)?;
                within(
                    "original_max_position_embeddings",
                    *original_context,
                    1,
                    1 << 24,
                )?;
            }
            Some(RopeScaling::FreqFactors { factors }) => {
                if factors.len() != self.head_dim / 2 {
                    return Err(format!(
                        "rope frequency factors: {} values for head_dim {}",
                        factors.len(),
                        self.head_dim
                    ));
                }
                for f in factors {
                    finite_above("rope frequency factor", *f, 0.0)?;
                }
            }
        }
        Ok(())
    }

    /// Parameters of the matrices and embeddings (norm weights included).
    pub fn num_parameters(&self) -> usize {
        let attn = self.dim * self.head_dim * (2 * self.n_heads + 2 * self.n_kv_heads);
        let ffn = 3 * self.dim * self.ffn_dim;
        let per_layer = attn + ffn + 2 * self.dim;
        let embeddings = self.vocab_size * self.dim * if self.tie_embeddings { 1 } else { 2 };
        self.n_layers * per_layer + embeddings + self.dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_papers_sizes() {
        let billions = |n: &str| LlamaConfig::preset(n).unwrap().num_parameters() as f64 / 1e9;
        assert!((billions("llama3.1-8b") - 8.03).abs() < 0.01);
        assert!((billions("llama3.1-70b") - 70.55).abs() < 0.05);
        assert!((billions("llama3.1-405b") - 405.8).abs() < 0.5);
        assert!((billions("llama3.2-1b") - 1.24).abs() < 0.01);
        assert!((billions("llama3.2-3b") - 3.21).abs() < 0.01);
        for name in PRESET_NAMES {
            LlamaConfig::preset(name).unwrap().validate().unwrap();
        }
        assert!(LlamaConfig::preset("llama2-7b").is_none());
    }
}

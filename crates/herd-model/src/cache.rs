//! The keys and values that attention has already computed, one contiguous slot per layer, for
//! the batched forward pass ([`crate::Llama::hidden_states`]); inference steps keep theirs in
//! the paged cache of [`crate::paged`].

use candle_core::{Result, Tensor};

/// Per-layer key/value cache, preallocated for `capacity` tokens per row.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<candle_nn::kv_cache::KvCache>,
    capacity: usize,
}

impl KvCache {
    /// An empty cache for `n_layers` layers holding up to `capacity` tokens.
    pub fn new(n_layers: usize, capacity: usize) -> KvCache {
        KvCache {
            layers: (0..n_layers)
                .map(|_| candle_nn::kv_cache::KvCache::new(2, capacity))
                .collect(),
            capacity,
        }
    }

    /// Tokens cached so far.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |l| l.current_seq_len())
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tokens the cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets everything cached.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| l.reset());
    }

    /// Appends `k`, `v` (`[batch, kv_heads, seq, head_dim]`) to layer `layer` and returns all
    /// keys and values of that layer so far.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let slot = &mut self.layers[layer];
        if slot.current_seq_len() + k.dim(2)? > self.capacity {
            candle_core::bail!(
                "KV cache full: {} tokens cached, {} more do not fit in {}",
                slot.current_seq_len(),
                k.dim(2)?,
                self.capacity
            );
        }
        let (k, v) = slot.append(&k.contiguous()?, &v.contiguous()?)?;
        Ok((k.contiguous()?, v.contiguous()?))
    }
}

//! One Transformer block: `h = x + attention(norm(x))`, `out = h + ffn(norm(h))`.

use candle_core::{Result, Tensor};

use crate::attention::{Attention, AttentionInput};
use crate::cache::KvCache;
use crate::feed_forward::FeedForward;
use crate::norm::RmsNorm;

/// Attention and feed-forward, each behind a pre-norm and a residual connection.
#[derive(Debug, Clone)]
pub struct Block {
    pub(crate) attention_norm: RmsNorm,
    pub(crate) attention: Attention,
    pub(crate) ffn_norm: RmsNorm,
    pub(crate) feed_forward: FeedForward,
}

impl Block {
    /// Applies the block to `x` (`[batch, seq, dim]`).
    pub fn forward(
        &self,
        x: &Tensor,
        input: &AttentionInput,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let h = (x + self
            .attention
            .forward(&self.attention_norm.forward(x)?, input, cache)?)?;
        &h + self.feed_forward.forward(&self.ffn_norm.forward(&h)?)?
    }
}

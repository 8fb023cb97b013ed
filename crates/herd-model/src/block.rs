//! One Transformer block: `h = x + attention(norm(x))`, `out = h + ffn(norm(h))`.

use std::sync::Arc;

use candle_core::{Result, Tensor};

use crate::attention::{Attention, AttentionInput};
use crate::cache::KvCache;
use crate::feed_forward::FeedForward;
use crate::norm::RmsNorm;
use crate::paged::{PagedKv, PagedSeq};
use crate::split::{enter, exit, Parts};
use crate::trace::record;

/// Attention and feed-forward, each behind a pre-norm and a residual connection.
#[derive(Debug, Clone)]
pub struct Block {
    pub(crate) attention_norm: RmsNorm,
    pub(crate) attention: Attention,
    pub(crate) ffn_norm: RmsNorm,
    pub(crate) feed_forward: FeedForward,
    /// The exchange completing the split layers' sums ([`crate::split`]), when split.
    pub(crate) split: Option<Arc<dyn Parts>>,
}

impl Block {
    /// Applies the block to `x` (`[batch, seq, dim]`).
    pub fn forward(
        &self,
        x: &Tensor,
        input: &AttentionInput,
        cache: Option<(&mut KvCache, usize)>,
        layer: usize,
    ) -> Result<Tensor> {
        let trace = |name: &str, t: &Tensor| record(name, Some(layer), t);
        let normed = self.attention_norm.forward(x)?;
        trace("attn_norm", &normed);
        let split = self.split.as_ref();
        let attention = self
            .attention
            .forward(&enter(split, &normed)?, input, cache)?;
        let attention = exit(split, &attention)?;
        trace("attn_out", &attention);
        let h = (x + attention)?;
        trace("ffn_inp", &h);
        let ffn = self.feed_forward(&h)?;
        trace("ffn_out", &ffn);
        let out = (&h + ffn)?;
        trace("l_out", &out);
        Ok(out)
    }

    /// Applies the block to the new tokens of several sequences at once (see
    /// [`Attention::forward_paged`]): everything but attention runs on all rows together.
    pub fn forward_paged(
        &self,
        x: &Tensor,
        spans: &[(usize, usize)],
        rope: (&Tensor, &Tensor),
        kv: &mut PagedKv,
        seqs: &[PagedSeq],
        layer: usize,
    ) -> Result<Tensor> {
        let split = self.split.as_ref();
        let normed = enter(split, &self.attention_norm.forward(x)?)?;
        let attention = self
            .attention
            .forward_paged(&normed, spans, rope, kv, seqs, layer)?;
        let h = (x + exit(split, &attention)?)?;
        let ffn = self.feed_forward(&h)?;
        &h + ffn
    }

    /// The feed-forward network of the residual stream `h`, behind its norm.
    fn feed_forward(&self, h: &Tensor) -> Result<Tensor> {
        let split = self.split.as_ref();
        let normed = enter(split, &self.ffn_norm.forward(h)?)?;
        exit(split, &self.feed_forward.forward(&normed)?)
    }
}

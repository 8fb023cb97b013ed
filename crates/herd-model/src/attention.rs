//! Grouped-query self-attention (8 KV heads in every Llama 3 model) with RoPE, an additive mask
//! for causality and document boundaries, and an optional KV cache.

use std::sync::Arc;

use candle_core::{DType, Result, Tensor};

use crate::cache::KvCache;
use crate::linear::Linear;
use crate::paged::{PagedKv, PagedSeq};
use crate::rope::Rope;
use crate::softmax::masked_softmax;
use crate::split::{gather_sequence, Parts};

/// The four projections of one attention layer and its head counts.
#[derive(Debug, Clone)]
pub struct Attention {
    pub(crate) wq: Linear,
    pub(crate) wk: Linear,
    pub(crate) wv: Linear,
    pub(crate) wo: Linear,
    pub(crate) n_heads: usize,
    pub(crate) n_kv_heads: usize,
    pub(crate) head_dim: usize,
}

/// What every layer's attention shares in one forward pass.
pub struct AttentionInput<'a> {
    /// RoPE cosines, `[batch, seq, head_dim/2]`.
    pub cos: &'a Tensor,
    /// RoPE sines, same shape.
    pub sin: &'a Tensor,
    /// Additive mask `[batch|1, 1, seq, kv_len]` in the scores' dtype (f32, or f64 for f64
    /// models), or `None` when all keys are visible.
    pub mask: Option<&'a Tensor>,
    /// When the tokens are one part of longer rows (context parallelism): the exchange that
    /// gathers every part's keys and values.
    pub context: Option<&'a Arc<dyn Parts>>,
}

impl Attention {
    /// Attends `x` (`[batch, seq, dim]`) to itself and to what `cache` holds for layer `layer`.
    pub fn forward(
        &self,
        x: &Tensor,
        input: &AttentionInput,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (h, kvh, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let [q, k, v] = Linear::forward_many([&self.wq, &self.wk, &self.wv], x)?;
        let heads = |y: Tensor, n: usize| y.reshape((b, t, n, hd))?.transpose(1, 2);
        let q = Rope::apply(&heads(q, h)?, input.cos, input.sin)?;
        let k = Rope::apply(&heads(k, kvh)?, input.cos, input.sin)?;
        let v = heads(v, kvh)?.contiguous()?;
        let (k, v) = match (cache, input.context) {
            (Some(_), Some(_)) => candle_core::bail!("a part of a sequence runs without a cache"),
            (Some((cache, layer)), None) => cache.append(layer, &k, &v)?,
            (None, Some(parts)) => (gather_sequence(parts, &k)?, gather_sequence(parts, &v)?),
            (None, None) => (k, v),
        };
        let out = self.attend(&q, &k, &v, input.mask, t)?;
        crate::trace::record("kqv_out", None, &out);
        self.wo.forward(&out)
    }

    /// Scaled, masked attention of the queries `q` (`[b, heads, t, hd]`) over `k`, `v`
    /// (`[b, kv_heads, kv_len, hd]`); returns `[b, t, heads · hd]`.
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        t: usize,
    ) -> Result<Tensor> {
        let b = q.dim(0)?;
        let (h, kvh, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        // The query heads of one group share a KV head: fold the group into the rows.
        let group = h / kvh;
        let q = q.reshape((b, kvh, group * t, hd))?;
        let scores = q.matmul(&k.t()?)?;
        let wide = crate::norm::accumulation_dtype(scores.dtype());
        let scale = 1.0 / (hd as f64).sqrt();
        let probs = masked_softmax(&scores.to_dtype(wide)?, mask, scale, t)?.to_dtype(v.dtype())?;
        let out = probs.matmul(v)?; // [b, kvh, group * t, hd]
        out.reshape((b, h, t, hd))?
            .transpose(1, 2)?
            .reshape((b, t, h * hd))
    }

    /// Attention over several sequences at once on the paged cache: `x` (`[1, total, dim]`)
    /// holds each sequence's new tokens one after another (`spans`: first row and count),
    /// `cos`/`sin` (`[total, 1, head_dim/2]`) their RoPE angles. The projections run on all
    /// rows together; the new keys and values are written to `kv` at each sequence's next
    /// positions, and each row attends over its own sequence's positions up to its own
    /// ([`PagedKv::attend`]).
    pub fn forward_paged(
        &self,
        x: &Tensor,
        spans: &[(usize, usize)],
        (cos, sin): (&Tensor, &Tensor),
        kv: &mut PagedKv,
        seqs: &[PagedSeq],
        layer: usize,
    ) -> Result<Tensor> {
        let (_, total, _) = x.dims3()?;
        let (h, kvh, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let [q, k, v] = Linear::forward_many([&self.wq, &self.wk, &self.wv], x)?;
        // Each row its own batch entry, so RoPE takes every row at its own position.
        let rows = |y: Tensor| y.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
        let heads = |y: Tensor, n: usize| y.reshape((total, n, 1, hd));
        let q = rows(Rope::apply(&heads(q, h)?, cos, sin)?)?;
        let k = rows(Rope::apply(&heads(k, kvh)?, cos, sin)?)?;
        let v = rows(v)?;
        kv.write(layer, seqs, spans, &k, &v);
        let out = kv.attend(layer, seqs, spans, &q, h);
        let out = Tensor::from_vec(out, (1, total, h * hd), x.device())?.to_dtype(x.dtype())?;
        self.wo.forward(&out)
    }
}

//! The Llama 3 Transformer: token embedding, the blocks, a final RMSNorm and the output
//! projection (paper §3.2).

use std::ops::Range;
use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor};

use crate::attention::{Attention, AttentionInput};
use crate::block::Block;
use crate::cache::KvCache;
use crate::config::LlamaConfig;
use crate::embedding::Embedding;
use crate::feed_forward::FeedForward;
use crate::linear::Linear;
use crate::norm::{accumulation_dtype, RmsNorm};
use crate::paged::{PagedKv, PagedSeq};
use crate::rope::Rope;
use crate::sequence::SequenceLayout;
use crate::split::{check_parts, enter, exit, Parts};
use crate::stage::holds;
use crate::weights::Weights;

/// A dense Llama 3 decoder ready for inference, or one stage of one ([`crate::stage`]).
#[derive(Debug, Clone)]
pub struct Llama {
    config: LlamaConfig,
    /// The token embedding (on the first stage).
    embedding: Option<Embedding>,
    /// Blocks `layers` of the model.
    layers: Range<usize>,
    blocks: Vec<Block>,
    /// The final norm and the output layer (on the last stage).
    head: Option<Head>,
    rope: Rope,
    dtype: DType,
    device: Device,
    /// When the layers are split ([`crate::split`]): the exchange between the parts.
    split: Option<Arc<dyn Parts>>,
}

/// What follows the last block: the final RMSNorm and the output projection.
#[derive(Debug, Clone)]
struct Head {
    norm: RmsNorm,
    output: Linear,
}

/// HF name of a tensor of block `layer`.
pub fn layer_tensor(layer: usize, suffix: &str) -> String {
    format!("model.layers.{layer}.{suffix}")
}

/// Every parameter tensor of a model of shape `config`: HF name and dims (`[out, in]` for
/// matrices), embedding and final norm first, then block by block.
pub fn tensor_shapes(config: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let (d, hd, v) = (config.dim, config.head_dim, config.vocab_size);
    let mut shapes = vec![
        ("model.embed_tokens.weight".to_string(), vec![v, d]),
        ("model.norm.weight".to_string(), vec![d]),
    ];
    if !config.tie_embeddings {
        shapes.push(("lm_head.weight".to_string(), vec![v, d]));
    }
    for l in 0..config.n_layers {
        let t = |s: &str| layer_tensor(l, s);
        let (q, kv, f) = (config.n_heads * hd, config.n_kv_heads * hd, config.ffn_dim);
        shapes.extend([
            (t("input_layernorm.weight"), vec![d]),
            (t("post_attention_layernorm.weight"), vec![d]),
            (t("self_attn.q_proj.weight"), vec![q, d]),
            (t("self_attn.k_proj.weight"), vec![kv, d]),
            (t("self_attn.v_proj.weight"), vec![kv, d]),
            (t("self_attn.o_proj.weight"), vec![d, q]),
            (t("mlp.gate_proj.weight"), vec![f, d]),
            (t("mlp.up_proj.weight"), vec![f, d]),
            (t("mlp.down_proj.weight"), vec![d, f]),
        ]);
    }
    shapes
}

impl Llama {
    /// Builds the model from `weights` (HF names, half-split RoPE layout). Dense weights are cast
    /// to `dtype`; quantized ones stay quantized (their activations are f32).
    pub fn load(
        config: LlamaConfig,
        weights: &Weights,
        dtype: DType,
        device: &Device,
    ) -> crate::Result<Llama> {
        Llama::load_part(config, weights, dtype, device, None)
    }

    /// Builds one part of a model of shape `config` whose layers are split ([`crate::split`]):
    /// `weights` hold this part's slices (query and KV heads, FFN units and vocabulary rows
    /// divided by `split.parts()`, which must divide each), and `split` completes the partial
    /// sums. Its [`Llama::logits`] are this part's slice of the vocabulary. Without `split`,
    /// [`Llama::load`].
    pub fn load_part(
        config: LlamaConfig,
        weights: &Weights,
        dtype: DType,
        device: &Device,
        split: Option<Arc<dyn Parts>>,
    ) -> crate::Result<Llama> {
        let layers = 0..config.n_layers;
        Llama::load_stage(config, weights, dtype, device, split, layers)
    }

    /// Builds the stage of a model of shape `config` that holds blocks `layers`
    /// ([`crate::stage`]): `weights` need only hold that stage's tensors, the embedding when
    /// `layers` starts at 0, the final norm and output layer when it ends at the last block.
    /// Its [`Llama::stage_forward`] takes the previous stage's hidden states (or the tokens)
    /// and gives the next stage's (or the logits). `split` as in [`Llama::load_part`]; a model
    /// whose output layer is its embedding (`tie_embeddings`) is not cut into stages.
    pub fn load_stage(
        config: LlamaConfig,
        weights: &Weights,
        dtype: DType,
        device: &Device,
        split: Option<Arc<dyn Parts>>,
        layers: Range<usize>,
    ) -> crate::Result<Llama> {
        let bad_config =
            |m: String| crate::Error::format(weights.source(), format!("bad config: {m}"));
        config.validate().map_err(bad_config)?;
        let parts = split.as_ref().map_or(1, |s| s.parts());
        check_parts(&config, parts).map_err(|(name, value)| {
            bad_config(format!(
                "{name} ({value}) does not split into {parts} equal parts"
            ))
        })?;
        let whole = 0..config.n_layers;
        if layers.is_empty() || layers.end > config.n_layers {
            return Err(bad_config(format!(
                "a stage of blocks {layers:?} of a model of {}",
                config.n_layers
            )));
        }
        if config.tie_embeddings && layers != whole {
            return Err(bad_config(
                "a model whose output layer is its embedding (tie_embeddings) is not cut into \
                 stages"
                    .into(),
            ));
        }
        let (d, hd) = (config.dim, config.head_dim);
        let (heads, kv_heads) = (config.n_heads / parts, config.n_kv_heads / parts);
        let (ffn, vocab) = (config.ffn_dim / parts, config.vocab_size / parts);
        let linear = |name: &str, out: usize, inp: usize| -> crate::Result<Linear> {
            Ok(Linear::new(weights.get(name, &[out, inp])?, dtype)?)
        };
        let norm = |name: &str| -> crate::Result<RmsNorm> {
            let w = weights
                .get(name, &[d])?
                .to_dense(accumulation_dtype(dtype))?;
            Ok(RmsNorm::new(w, config.norm_eps)?)
        };
        let mut blocks = Vec::with_capacity(layers.len());
        for l in layers.clone() {
            let t = |suffix: &str| layer_tensor(l, suffix);
            blocks.push(Block {
                attention_norm: norm(&t("input_layernorm.weight"))?,
                attention: Attention {
                    wq: linear(&t("self_attn.q_proj.weight"), heads * hd, d)?,
                    wk: linear(&t("self_attn.k_proj.weight"), kv_heads * hd, d)?,
                    wv: linear(&t("self_attn.v_proj.weight"), kv_heads * hd, d)?,
                    wo: linear(&t("self_attn.o_proj.weight"), d, heads * hd)?,
                    n_heads: heads,
                    n_kv_heads: kv_heads,
                    head_dim: hd,
                },
                ffn_norm: norm(&t("post_attention_layernorm.weight"))?,
                feed_forward: FeedForward {
                    gate: linear(&t("mlp.gate_proj.weight"), ffn, d)?,
                    up: linear(&t("mlp.up_proj.weight"), ffn, d)?,
                    down: linear(&t("mlp.down_proj.weight"), d, ffn)?,
                },
                split: split.clone(),
            });
        }
        let holds = |name: &str| holds(name, &layers, config.n_layers);
        let embed = "model.embed_tokens.weight";
        let embedding = match holds(embed) {
            true => Some(Embedding::new(weights.get(embed, &[vocab, d])?, dtype)?),
            false => None,
        };
        let head = match holds("lm_head.weight") {
            false => None,
            true => Some(Head {
                norm: norm("model.norm.weight")?,
                output: match config.tie_embeddings && !weights.contains("lm_head.weight") {
                    true => Linear::new(weights.get(embed, &[vocab, d])?, dtype)?,
                    false => linear("lm_head.weight", vocab, d)?,
                },
            }),
        };
        Ok(Llama {
            rope: Rope::new(&config),
            config,
            embedding,
            layers,
            blocks,
            head,
            dtype,
            device: device.clone(),
            split,
        })
    }

    /// The blocks this model holds: all of them, or a stage's ([`Llama::load_stage`]).
    pub fn layers(&self) -> Range<usize> {
        self.layers.clone()
    }

    /// The embedding, which the first stage holds.
    fn embedding(&self) -> Result<&Embedding> {
        self.embedding.as_ref().ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "this stage (blocks {:?}) holds no embedding: it takes hidden states",
                self.layers
            ))
        })
    }

    /// The final norm and output layer, which the last stage holds.
    fn head(&self) -> Result<&Head> {
        self.head.as_ref().ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "this stage (blocks {:?}) holds no output layer: it gives hidden states",
                self.layers
            ))
        })
    }

    /// The exchange between the parts of a split model ([`Llama::load_part`]), or `None`.
    pub fn split(&self) -> Option<&Arc<dyn Parts>> {
        self.split.as_ref()
    }

    /// The embedding rows of `ids` (flat u32), `[ids, dim]`. A split model looks up the ids of
    /// its slice of the vocabulary, zeros for the others, and sums the parts' rows.
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let embedding = self.embedding()?;
        let Some(split) = &self.split else {
            return embedding.lookup(ids);
        };
        let rows = (self.config.vocab_size / split.parts()) as u32;
        let first = split.part() as u32 * rows;
        let ids = ids.to_vec1::<u32>()?;
        if let Some(id) = ids
            .iter()
            .find(|&&id| id as usize >= self.config.vocab_size)
        {
            candle_core::bail!(
                "token id {id} is outside the vocabulary of {}",
                self.config.vocab_size
            );
        }
        let mine = |id: u32| id >= first && id < first + rows;
        let local: Vec<u32> = ids
            .iter()
            .map(|&id| if mine(id) { id - first } else { 0 })
            .collect();
        let keep: Vec<f32> = ids
            .iter()
            .map(|&id| f32::from(u8::from(mine(id))))
            .collect();
        let keep = Tensor::from_vec(keep, (ids.len(), 1), &self.device)?.to_dtype(self.dtype)?;
        let local = Tensor::from_vec(local, ids.len(), &self.device)?;
        let looked_up = embedding.lookup(&local)?.broadcast_mul(&keep)?;
        exit(Some(split), &looked_up)
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The dtype of activations (f32 for quantized models).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A KV cache sized for this model.
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        KvCache::new(self.config.n_layers, capacity)
    }

    /// Final (normalised) hidden states `[batch, seq, dim]` of `tokens` (`[batch, seq]`, u32)
    /// laid out as `layout` says; appends to `cache` when given.
    pub fn hidden_states(
        &self,
        tokens: &Tensor,
        layout: &SequenceLayout,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let head = self.head()?;
        let out = head
            .norm
            .forward(&self.run_blocks(tokens, layout, cache)?)?;
        crate::trace::record("result_norm", None, &out);
        Ok(out)
    }

    /// What this stage ([`Llama::load_stage`]) computes of `input` laid out as `layout`: the
    /// first stage takes tokens (`[batch, seq]`, u32), the others the previous stage's output
    /// (`[batch, seq, dim]`); the last gives logits (as [`Llama::forward`]), the others their
    /// last block's output, the residual stream the next stage goes on from.
    pub fn stage_forward(&self, input: &Tensor, layout: &SequenceLayout) -> Result<Tensor> {
        let x = self.run_blocks(input, layout, None)?;
        match &self.head {
            Some(head) => self.logits(&head.norm.forward(&x)?),
            None => Ok(x),
        }
    }

    /// The residual stream after this model's blocks: of the embedded `input` tokens when it
    /// holds the embedding, of `input` hidden states otherwise.
    fn run_blocks(
        &self,
        input: &Tensor,
        layout: &SequenceLayout,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (b, t) = (input.dim(0)?, input.dim(1)?);
        if (b, t) != (layout.batch(), layout.seq_len()) {
            candle_core::bail!(
                "the input is [{b}, {t}, …] but the layout is [{}, {}]",
                layout.batch(),
                layout.seq_len()
            );
        }
        let mut x = match &self.embedding {
            Some(_) => {
                input.dims2()?;
                let x = self.embed(&input.flatten_all()?)?;
                x.reshape((b, t, self.config.dim))?
            }
            None if input.dims() == [b, t, self.config.dim] => input.clone(),
            None => candle_core::bail!(
                "this stage (blocks {:?}) takes hidden states [{b}, {t}, {}], not {:?}",
                self.layers,
                self.config.dim,
                input.dims()
            ),
        };
        crate::trace::record("embd", None, &x);
        let (cos, sin) = self
            .rope
            .cos_sin(layout.positions(), b, self.dtype, &self.device)?;
        // In the dtype attention scores are computed in, once for every layer.
        let mask = layout.mask(accumulation_dtype(self.dtype), &self.device)?;
        let attention = AttentionInput {
            cos: &cos,
            sin: &sin,
            mask: mask.as_ref(),
            context: layout.context(),
        };
        for (l, block) in self.layers.clone().zip(&self.blocks) {
            x = block.forward(&x, &attention, cache.as_deref_mut().map(|c| (c, l)), l)?;
        }
        Ok(x)
    }

    /// One step of several sequences at once, as a serving engine runs them: sequence `i`
    /// brings `tokens[i]` (a chunk of its prompt, or its one newest token) following the
    /// `seqs[i].cached` positions its blocks of `kv` already hold, and the step writes the new
    /// ones after them. The matrix products run on all the step's tokens together; attention
    /// runs per row over its own sequence's blocks ([`crate::paged`]). Returns each sequence's
    /// final hidden state at its last new token (`[sequences, dim]`).
    pub fn step(&self, tokens: &[&[u32]], kv: &mut PagedKv, seqs: &[PagedSeq]) -> Result<Tensor> {
        self.step_rows(tokens, kv, seqs, &vec![false; tokens.len()])
    }

    /// [`Llama::step`], returning the final hidden states of every new token of the sequences
    /// whose `every_position` is set (a prompt being scored) and of the last new token of the
    /// others, in sequence order: `[rows, dim]`.
    pub fn step_rows(
        &self,
        tokens: &[&[u32]],
        kv: &mut PagedKv,
        seqs: &[PagedSeq],
        every_position: &[bool],
    ) -> Result<Tensor> {
        if tokens.len() != seqs.len()
            || tokens.len() != every_position.len()
            || tokens.iter().any(|t| t.is_empty())
        {
            candle_core::bail!(
                "a step needs one non-empty token list, one sequence and one row choice per \
                 sequence"
            );
        }
        let lengths: Vec<usize> = tokens.iter().map(|t| t.len()).collect();
        kv.check(seqs, &lengths)?;
        if let Some(end) = seqs
            .iter()
            .zip(&lengths)
            .map(|(s, n)| s.cached + n)
            .find(|&end| end > self.config.max_seq_len)
        {
            candle_core::bail!(
                "{end} positions exceed the model's context of {}",
                self.config.max_seq_len
            );
        }
        let mut spans = Vec::with_capacity(tokens.len());
        let mut positions = Vec::new();
        let mut all = Vec::new();
        for (ids, seq) in tokens.iter().zip(seqs) {
            spans.push((all.len(), ids.len()));
            positions.extend((seq.cached..seq.cached + ids.len()).map(|p| p as u32));
            all.extend_from_slice(ids);
        }
        let total = all.len();
        // One RoPE row per token: `[total, 1, head_dim/2]`.
        let (cos, sin) = self
            .rope
            .cos_sin(&positions, total, self.dtype, &self.device)?;
        let ids = Tensor::new(all.as_slice(), &self.device)?;
        let mut x = self.embed(&ids)?.reshape((1, total, self.config.dim))?;
        for (l, block) in self.layers.clone().zip(&self.blocks) {
            x = block.forward_paged(&x, &spans, (&cos, &sin), kv, seqs, l)?;
        }
        let rows: Vec<u32> = spans
            .iter()
            .zip(every_position)
            .flat_map(|(&(row, len), &every)| {
                let first = if every { row } else { row + len - 1 };
                (first as u32)..((row + len) as u32)
            })
            .collect();
        let rows = x
            .squeeze(0)?
            .index_select(&Tensor::new(rows.as_slice(), &self.device)?, 0)?;
        self.head()?.norm.forward(&rows)
    }

    /// Output logits (f32, or f64 for an f64 model) for hidden states `[..., dim]`; a split
    /// model's are of its slice of the vocabulary.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.head()?
            .output
            .forward(&enter(self.split(), hidden)?)?
            .to_dtype(accumulation_dtype(self.dtype))
    }

    /// Logits `[batch, seq, vocab]` at every position.
    pub fn forward(
        &self,
        tokens: &Tensor,
        layout: &SequenceLayout,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        self.logits(&self.hidden_states(tokens, layout, cache)?)
    }
}

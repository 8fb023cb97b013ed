//! DPO training (paper §4.1.4): the policy's response log-probabilities against the frozen
//! reference's, which are computed once before training and cached in the run folder
//! (`reference-logprobs-<fingerprint>.safetensors`, so a resumed run reads them back and a
//! run on other data does not).

use std::path::Path;

use candle_core::{DType, Tensor};
use herd_model::Llama;
use herd_train::loss::token_nll;
use herd_train::params::Parameters;
use herd_train::step::{accumulate, gradients, tensors, Unused};
use herd_util::seeded::fnv1a64;

use crate::dataset::TokenPair;
use crate::dpo::{dpo_loss, DpoConfig, DpoStats, PairLogProbs};
use crate::error::{Error, Result};
use crate::fit::{Evaluation, Objective, StepOutput};
use crate::masks::Masked;
use crate::pack::{pack, Packed};

/// Per packed sequence, the sum of the log-probabilities of its loss tokens (`[sequences]`,
/// differentiable) and how many there are.
pub fn sequence_logprobs(model: &Llama, packed: &Packed) -> Result<(Tensor, Vec<f64>)> {
    let (inputs, targets, weights, layout) = tensors(&packed.batch, model)?;
    let logits = model.forward(&inputs, &layout, None)?;
    let vocab = logits.dim(2)?;
    let nll = token_nll(&logits.reshape(((), vocab))?, &targets, &weights)?;
    let seq_len = packed.batch.seq_len;
    let n = packed.batch.rows * seq_len;
    let mut selection = vec![0f32; packed.spans.len() * n];
    let mut counts = Vec::with_capacity(packed.spans.len());
    for (s, span) in packed.spans.iter().enumerate() {
        let first = span.row * seq_len + span.start;
        let mut count = 0.0;
        for at in first..first + span.len {
            selection[s * n + at] = 1.0;
            count += f64::from(packed.batch.weights[at]);
        }
        counts.push(count);
    }
    let selection = Tensor::from_vec(selection, (packed.spans.len(), n), model.device())?
        .to_dtype(nll.dtype())?;
    let sums = selection.matmul(&nll.unsqueeze(1)?)?.squeeze(1)?.neg()?;
    Ok((sums, counts))
}

/// The reference's log-probabilities of each pair's chosen and rejected replies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReferenceLogProbs {
    /// Chosen replies.
    pub chosen: Vec<f64>,
    /// Rejected replies.
    pub rejected: Vec<f64>,
}

/// Chosen and rejected sequences of `pairs` (chosen first), packed.
fn pack_pairs(pairs: &[&TokenPair], seq_len: usize) -> Packed {
    let chosen: Vec<Masked> = pairs.iter().map(|p| p.sequence(&p.chosen)).collect();
    let rejected: Vec<Masked> = pairs.iter().map(|p| p.sequence(&p.rejected)).collect();
    let sequences: Vec<&Masked> = chosen.iter().chain(&rejected).collect();
    pack(&sequences, seq_len)
}

/// Computes the reference log-probabilities of `pairs`, `per_pass` pairs at a time.
pub fn reference_logprobs(
    reference: &Llama,
    pairs: &[TokenPair],
    seq_len: usize,
    per_pass: usize,
) -> Result<ReferenceLogProbs> {
    let mut out = ReferenceLogProbs::default();
    let all: Vec<&TokenPair> = pairs.iter().collect();
    for chunk in all.chunks(per_pass.max(1)) {
        let (sums, _) = sequence_logprobs(reference, &pack_pairs(chunk, seq_len))?;
        let v: Vec<f64> = sums.to_dtype(DType::F64)?.to_vec1()?;
        out.chosen.extend_from_slice(&v[..chunk.len()]);
        out.rejected.extend_from_slice(&v[chunk.len()..]);
    }
    Ok(out)
}

/// The reference log-probabilities of `pairs`, read from the cache in `dir` when it holds
/// them for exactly these pairs, else computed and cached there.
pub fn cached_reference(
    dir: &Path,
    reference: &Llama,
    pairs: &[TokenPair],
    seq_len: usize,
    per_pass: usize,
) -> Result<ReferenceLogProbs> {
    let mut fingerprint = format!("{seq_len}:");
    for p in pairs {
        for ids in [&p.prompt, &p.chosen.ids, &p.rejected.ids] {
            fingerprint += &format!("{ids:?}");
        }
    }
    let path = dir.join(format!(
        "reference-logprobs-{:016x}.safetensors",
        fnv1a64(fingerprint.as_bytes())
    ));
    if let Ok(tensors) = candle_core::safetensors::load(&path, reference.device()) {
        let get = |name: &str| -> Option<Vec<f64>> { tensors.get(name)?.to_vec1().ok() };
        if let (Some(chosen), Some(rejected)) = (get("chosen"), get("rejected")) {
            if chosen.len() == pairs.len() && rejected.len() == pairs.len() {
                return Ok(ReferenceLogProbs { chosen, rejected });
            }
        }
    }
    let computed = reference_logprobs(reference, pairs, seq_len, per_pass)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = path.with_extension("tmp");
    let device = reference.device();
    let tensors = [
        ("chosen", Tensor::new(computed.chosen.as_slice(), device)?),
        (
            "rejected",
            Tensor::new(computed.rejected.as_slice(), device)?,
        ),
    ];
    candle_core::safetensors::save(&tensors.into_iter().collect(), &tmp)?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    Ok(computed)
}

/// Pairs with their reference log-probabilities.
pub struct PairSet {
    /// The pairs.
    pub pairs: Vec<TokenPair>,
    /// Their reference log-probabilities.
    pub reference: ReferenceLogProbs,
}

/// The DPO objective.
pub struct DpoTraining {
    train: PairSet,
    held_out: PairSet,
    config: DpoConfig,
    seq_len: usize,
    micro_batch: usize,
}

impl DpoTraining {
    /// DPO on `train`, evaluated on `held_out`, `micro_batch` pairs per pass.
    pub fn new(
        train: PairSet,
        held_out: PairSet,
        config: DpoConfig,
        seq_len: usize,
        micro_batch: usize,
    ) -> DpoTraining {
        DpoTraining {
            train,
            held_out,
            config,
            seq_len,
            micro_batch: micro_batch.max(1),
        }
    }

    /// Loss (the pairs' mean times `share` of the step) and statistics of pairs `items` of
    /// `set`, with the tokens and rows processed.
    fn pairs_loss(
        &self,
        model: &Llama,
        set: &PairSet,
        items: &[usize],
        share: f64,
    ) -> Result<(Tensor, DpoStats, usize, usize)> {
        let pairs: Vec<&TokenPair> = items.iter().map(|&i| &set.pairs[i]).collect();
        let packed = pack_pairs(&pairs, self.seq_len);
        let (sums, counts) = sequence_logprobs(model, &packed)?;
        let k = pairs.len();
        let device = model.device();
        let constant = |values: Vec<f64>| -> Result<Tensor> {
            Ok(Tensor::new(values.as_slice(), device)?.to_dtype(sums.dtype())?)
        };
        let reference = &set.reference;
        let lp = PairLogProbs {
            policy_chosen: &sums.narrow(0, 0, k)?,
            policy_rejected: &sums.narrow(0, k, k)?,
            reference_chosen: &constant(items.iter().map(|&i| reference.chosen[i]).collect())?,
            reference_rejected: &constant(items.iter().map(|&i| reference.rejected[i]).collect())?,
            chosen_tokens: &constant(counts[..k].iter().map(|c| c.max(1.0)).collect())?,
        };
        let (loss, stats) = dpo_loss(&lp, self.config)?;
        let tokens = packed.spans.iter().map(|s| s.len).sum();
        Ok(((loss * share)?, stats, tokens, packed.batch.rows))
    }

    /// Mean loss and statistics of all of `set` under `model` (no gradients).
    fn measure(&self, model: &Llama, set: &PairSet) -> Result<Evaluation> {
        let all: Vec<usize> = (0..set.pairs.len()).collect();
        let mut acc = Accumulated::default();
        for chunk in all.chunks(self.micro_batch) {
            let share = chunk.len() as f64 / all.len() as f64;
            let (loss, stats, _, _) = self.pairs_loss(model, set, chunk, share)?;
            acc.add(&loss, &stats, share)?;
        }
        Ok(Evaluation {
            loss: acc.loss,
            stats: acc.stats(),
        })
    }
}

/// Share-weighted sums of micro-batch losses and statistics.
#[derive(Default)]
struct Accumulated {
    loss: f64,
    chosen: f64,
    rejected: f64,
    margin: f64,
    accuracy: f64,
}

impl Accumulated {
    fn add(&mut self, loss: &Tensor, stats: &DpoStats, share: f64) -> Result<()> {
        self.loss += loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        self.chosen += stats.chosen_reward * share;
        self.rejected += stats.rejected_reward * share;
        self.margin += stats.margin * share;
        self.accuracy += stats.accuracy * share;
        Ok(())
    }

    fn stats(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("reward_accuracy", self.accuracy),
            ("margin", self.margin),
            ("chosen_reward", self.chosen),
            ("rejected_reward", self.rejected),
        ]
    }
}

impl Objective for DpoTraining {
    fn examples(&self) -> usize {
        self.train.pairs.len()
    }

    fn step(&mut self, params: &Parameters, items: &[usize]) -> Result<StepOutput> {
        let model = params.model()?;
        let (mut grads, mut acc, mut tokens, mut rows) = (None, Accumulated::default(), 0, 0);
        for chunk in items.chunks(self.micro_batch) {
            let share = chunk.len() as f64 / items.len() as f64;
            let (loss, stats, t, r) = self.pairs_loss(&model, &self.train, chunk, share)?;
            acc.add(&loss, &stats, share)?;
            accumulate(&mut grads, gradients(params, &loss, Unused::Error)?)?;
            tokens += t;
            rows += r;
        }
        Ok(StepOutput {
            loss: acc.loss,
            grads: grads.unwrap_or_default(),
            tokens,
            rows,
            stats: acc.stats(),
        })
    }

    fn evaluate(&mut self, params: &Parameters) -> Result<Option<Evaluation>> {
        if self.held_out.pairs.is_empty() {
            return Ok(None);
        }
        let model = params.frozen_model()?;
        self.measure(&model, &self.held_out).map(Some)
    }
}

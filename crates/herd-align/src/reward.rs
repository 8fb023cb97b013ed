//! The reward model (paper §4.1.2): the Llama trunk with a scalar head on the hidden state of a
//! sequence's last token (`score.weight`, `[1, dim]`, as HF's `LlamaForSequenceClassification`
//! names it), trained on preference pairs with −log σ(r_chosen − r_rejected), no margin term.
//! Each pair is prompt + chosen and prompt + rejected, both ending with `<|eot_id|>`, packed
//! as separate documents.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use herd_model::checkpoint::hf;
use herd_model::Llama;
use herd_train::params::{normal_values, Parameters, INIT_STD};
use herd_train::step::{accumulate, gradients, tensors, Unused};

use crate::dataset::TokenPair;
use crate::dpo::neg_log_sigmoid;
use crate::error::{Error, Result};
use crate::fit::{Evaluation, Objective, StepOutput};
use crate::masks::Masked;
use crate::pack::{pack, Packed};

/// Name of the head's weight.
pub const SCORE_WEIGHT: &str = "score.weight";

/// Adds a fresh head (N(0, 0.02²), seeded) to `params` unless it has one.
pub fn add_head(params: &mut Parameters, seed: u64) -> Result<()> {
    if params.var(SCORE_WEIGHT).is_some() {
        return Ok(());
    }
    let dim = params.config().dim;
    let var = &params.vars()[0];
    let values = normal_values(seed ^ 0x5C0E, dim, INIT_STD);
    let head = Tensor::from_vec(values, (1, dim), var.device())?.to_dtype(var.dtype())?;
    Ok(params.append(SCORE_WEIGHT, &head)?)
}

/// The reward of each packed sequence (`[sequences]`): the head applied to the final hidden
/// state at the sequence's last token.
pub fn rewards(model: &Llama, score: &Tensor, packed: &Packed) -> Result<Tensor> {
    let (inputs, _, _, layout) = tensors(&packed.batch, model)?;
    let hidden = model.hidden_states(&inputs, &layout, None)?;
    let dim = hidden.dim(2)?;
    let seq_len = packed.batch.seq_len;
    let last: Vec<u32> = packed
        .spans
        .iter()
        .map(|s| s.last(seq_len) as u32)
        .collect();
    let index = Tensor::from_vec(last, packed.spans.len(), model.device())?;
    let picked = hidden.reshape(((), dim))?.index_select(&index, 0)?;
    Ok(picked.matmul(&score.t()?)?.squeeze(1)?)
}

/// A trained reward model, for scoring.
pub struct RewardModel {
    model: Llama,
    score: Tensor,
}

impl RewardModel {
    /// Reads the HF folder `dir` written by `herd rm train`.
    pub fn load(dir: &Path, device: &Device) -> Result<RewardModel> {
        let (config, weights) = hf::load(dir, device)?;
        if !weights.contains(SCORE_WEIGHT) {
            return Err(Error::Invalid(format!(
                "{} has no {SCORE_WEIGHT}: it is not a reward model (train one with `herd rm train`)",
                dir.display()
            )));
        }
        let score = weights
            .get(SCORE_WEIGHT, &[1, config.dim])?
            .to_dense(DType::F32)?;
        let model = Llama::load(config, &weights, DType::F32, device)?;
        Ok(RewardModel { model, score })
    }

    /// The rewards of `sequences`, scored `per_pass` at a time in rows of `seq_len`.
    pub fn score(
        &self,
        sequences: &[&Masked],
        seq_len: usize,
        per_pass: usize,
    ) -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(sequences.len());
        for chunk in sequences.chunks(per_pass.max(1)) {
            let r = rewards(&self.model, &self.score, &pack(chunk, seq_len))?;
            out.extend(r.to_dtype(DType::F64)?.to_vec1::<f64>()?);
        }
        Ok(out)
    }
}

/// Reward-model training on preference pairs.
pub struct RewardTraining {
    train: Vec<TokenPair>,
    held_out: Vec<TokenPair>,
    seq_len: usize,
    micro_batch: usize,
}

/// Sums over some pairs: loss, correctly ordered pairs, margins.
#[derive(Default)]
struct PairTotals {
    loss: f64,
    correct: usize,
    margin: f64,
}

impl RewardTraining {
    /// Training on `train`, evaluated on `held_out`; `micro_batch` pairs per pass.
    pub fn new(
        train: Vec<TokenPair>,
        held_out: Vec<TokenPair>,
        seq_len: usize,
        micro_batch: usize,
    ) -> RewardTraining {
        RewardTraining {
            train,
            held_out,
            seq_len,
            micro_batch: micro_batch.max(1),
        }
    }

    /// The pairs' loss summed and divided by `denominator` (differentiable), with totals and
    /// the tokens and rows processed.
    fn pairs_loss(
        &self,
        model: &Llama,
        score: &Tensor,
        pairs: &[&TokenPair],
        denominator: usize,
    ) -> Result<(Tensor, PairTotals, usize, usize)> {
        let chosen: Vec<Masked> = pairs.iter().map(|p| p.sequence(&p.chosen)).collect();
        let rejected: Vec<Masked> = pairs.iter().map(|p| p.sequence(&p.rejected)).collect();
        let sequences: Vec<&Masked> = chosen.iter().chain(&rejected).collect();
        let packed = pack(&sequences, self.seq_len);
        let r = rewards(model, score, &packed)?;
        let k = pairs.len();
        let margin = (r.narrow(0, 0, k)? - r.narrow(0, k, k)?)?;
        let losses = neg_log_sigmoid(&margin)?;
        let loss = (losses.sum_all()? / denominator as f64)?;
        let m: Vec<f64> = margin.to_dtype(DType::F64)?.to_vec1()?;
        let totals = PairTotals {
            loss: losses.to_dtype(DType::F64)?.sum_all()?.to_scalar()?,
            correct: m.iter().filter(|&&v| v > 0.0).count(),
            margin: m.iter().sum(),
        };
        let tokens = packed.spans.iter().map(|s| s.len).sum();
        Ok((loss, totals, tokens, packed.batch.rows))
    }
}

/// The head of `params`.
fn head(params: &Parameters) -> Result<Tensor> {
    params
        .var(SCORE_WEIGHT)
        .map(|v| v.as_tensor().clone())
        .ok_or_else(|| Error::Invalid("the parameters have no reward head".into()))
}

impl Objective for RewardTraining {
    fn examples(&self) -> usize {
        self.train.len()
    }

    fn step(&mut self, params: &Parameters, items: &[usize]) -> Result<StepOutput> {
        let model = params.model()?;
        let score = head(params)?;
        let pairs: Vec<&TokenPair> = items.iter().map(|&i| &self.train[i]).collect();
        let (mut grads, mut sum, mut tokens, mut rows) = (None, PairTotals::default(), 0, 0);
        for chunk in pairs.chunks(self.micro_batch) {
            let (loss, totals, t, r) = self.pairs_loss(&model, &score, chunk, pairs.len())?;
            accumulate(&mut grads, gradients(params, &loss, Unused::Zero)?)?;
            sum.loss += totals.loss;
            sum.correct += totals.correct;
            sum.margin += totals.margin;
            tokens += t;
            rows += r;
        }
        let n = pairs.len() as f64;
        Ok(StepOutput {
            loss: sum.loss / n,
            grads: grads.unwrap_or_default(),
            tokens,
            rows,
            stats: vec![
                ("accuracy", sum.correct as f64 / n),
                ("margin", sum.margin / n),
            ],
        })
    }

    fn evaluate(&mut self, params: &Parameters) -> Result<Option<Evaluation>> {
        if self.held_out.is_empty() {
            return Ok(None);
        }
        let model = params.frozen_model()?;
        let score = head(params)?.detach();
        let pairs: Vec<&TokenPair> = self.held_out.iter().collect();
        let mut sum = PairTotals::default();
        for chunk in pairs.chunks(self.micro_batch) {
            let (_, totals, _, _) = self.pairs_loss(&model, &score, chunk, 1)?;
            sum.loss += totals.loss;
            sum.correct += totals.correct;
            sum.margin += totals.margin;
        }
        let n = pairs.len() as f64;
        Ok(Some(Evaluation {
            loss: sum.loss / n,
            stats: vec![
                ("accuracy", sum.correct as f64 / n),
                ("margin", sum.margin / n),
            ],
        }))
    }
}

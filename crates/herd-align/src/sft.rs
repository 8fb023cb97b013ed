//! Supervised fine-tuning (paper §4.1.3): next-token loss on what the assistant writes
//! ([`crate::masks::sft_example`]), several conversations packed per row with the
//! inter-document mask, averaged over the step's loss tokens.

use herd_train::params::Parameters;
use herd_train::step::{accumulate, batch_nll_sum, gradients, Unused};

use crate::error::Result;
use crate::fit::{Evaluation, Objective, StepOutput};
use crate::masks::Masked;
use crate::pack::{pack, Packed};

/// The SFT objective over tokenized conversations.
pub struct Sft {
    train: Vec<Masked>,
    held_out: Vec<Masked>,
    seq_len: usize,
    micro_batch: usize,
    /// Conversations longer than a row (they are cut).
    pub truncated: usize,
}

impl Sft {
    /// SFT on `train`, evaluated on `held_out`, in rows of `seq_len` tokens, `micro_batch`
    /// conversations per forward/backward pass.
    pub fn new(
        train: Vec<Masked>,
        held_out: Vec<Masked>,
        seq_len: usize,
        micro_batch: usize,
    ) -> Sft {
        let truncated = train
            .iter()
            .chain(&held_out)
            .filter(|m| m.ids.len() > seq_len)
            .count();
        Sft {
            train,
            held_out,
            seq_len,
            micro_batch: micro_batch.max(1),
            truncated,
        }
    }

    /// Held-out conversations.
    pub fn held_out_len(&self) -> usize {
        self.held_out.len()
    }

    /// `examples` packed, `micro_batch` at a time.
    fn micro_batches(&self, examples: &[&Masked]) -> Vec<Packed> {
        examples
            .chunks(self.micro_batch)
            .map(|chunk| pack(chunk, self.seq_len))
            .collect()
    }
}

/// Tokens that are not padding.
fn real_tokens(packs: &[Packed]) -> usize {
    packs.iter().flat_map(|p| &p.spans).map(|s| s.len).sum()
}

impl Objective for Sft {
    fn examples(&self) -> usize {
        self.train.len()
    }

    fn step(&mut self, params: &Parameters, items: &[usize]) -> Result<StepOutput> {
        let examples: Vec<&Masked> = items.iter().map(|&i| &self.train[i]).collect();
        let packs = self.micro_batches(&examples);
        let targets: usize = packs.iter().map(|p| p.batch.n_targets()).sum();
        let model = params.model()?;
        let mut grads = None;
        let mut loss = 0.0;
        for p in &packs {
            let scaled = (batch_nll_sum(&model, &p.batch)? / targets.max(1) as f64)?;
            loss += scaled
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
            accumulate(&mut grads, gradients(params, &scaled, Unused::Error)?)?;
        }
        Ok(StepOutput {
            loss,
            grads: grads.unwrap_or_default(),
            tokens: real_tokens(&packs),
            rows: packs.iter().map(|p| p.batch.rows).sum(),
            stats: Vec::new(),
        })
    }

    fn evaluate(&mut self, params: &Parameters) -> Result<Option<Evaluation>> {
        if self.held_out.is_empty() {
            return Ok(None);
        }
        let model = params.frozen_model()?;
        let (mut sum, mut targets) = (0.0, 0);
        let examples: Vec<&Masked> = self.held_out.iter().collect();
        for p in self.micro_batches(&examples) {
            let nll = batch_nll_sum(&model, &p.batch)?;
            sum += nll.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            targets += p.batch.n_targets();
        }
        Ok(Some(Evaluation {
            loss: sum / targets.max(1) as f64,
            stats: Vec::new(),
        }))
    }
}

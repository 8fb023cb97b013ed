//! Pipeline parallelism (paper §3.3.1): the model's blocks cut into consecutive stages
//! ([`herd_model::stage`]) held by the ranks of a pipeline, and every batch's micro-batches passed
//! from stage to stage — hidden states forward, their gradients backward — on the 1F1B schedule
//! (PipeDream-Flush, Megatron-LM's): rank r of P first runs the forward passes of P − r − 1
//! micro-batches, then alternates one forward and one backward, then runs the backward passes
//! left; so it keeps at most P − r micro-batches' activations, and every stage's gradients are
//! the sums over the micro-batches that one process computes.
//!
//! Interleaved (Megatron-LM's virtual stages): with V stages per rank the blocks are cut into
//! P·V stages and rank r holds stages r, r + P, …; the forward passes go through a rank's stages
//! in groups of P micro-batches, its warm-up is (P − r − 1)·2 + (V − 1)·P passes, and the idle
//! time at the ends of a step shrinks by V for V times the messages. The micro-batches of a step
//! must then be a multiple of P.
//!
//! How ranks exchange values is [`Stages`], implemented outside (herd-parallel, over MPI). Sends
//! are posted and complete by the end of the schedule ([`Stages::flush`]), receives wait, and
//! every message is tagged with its micro-batch, stage and direction: a rank only ever waits
//! for a value an earlier pass of the schedule produces, so no order of arrival can stall it.
//! A stage's backward pass starts from its output and the gradient the next stage sent for it:
//! the gradient of `sum(output · upstream)`, which is exactly the chain rule's vector–Jacobian
//! product, reaches the stage's parameters and its input.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::Range;
use std::sync::Arc;

use candle_core::{DType, Tensor, Var};
use herd_model::llama::tensor_shapes;
use herd_model::split::Parts;
use herd_model::stage::{holds, stage_layers};
use herd_model::{Llama, LlamaConfig, Weight, Weights};

use crate::error::{Error, Result};
use crate::loader::Batch;
use crate::params::Parameters;
use crate::step::{logits_nll_sum, micro_batches, part_tensors, Gradients, PartTensors};

/// The exchange between the ranks of a pipeline. Every message is tagged; a receive takes the
/// message of its sender and tag, whatever else arrived first.
pub trait Stages: Debug + Send + Sync {
    /// Ranks in the pipeline.
    fn ranks(&self) -> usize;

    /// This process's rank in it, `0..ranks()`.
    fn rank(&self) -> usize;

    /// Stages each rank holds (1, or the virtual stages of an interleaved pipeline).
    fn stages_per_rank(&self) -> usize;

    /// Posts `values` to rank `to` with `tag`; the send completes by the next [`Stages::flush`].
    fn send(&self, to: usize, values: Vec<f32>, tag: u16) -> Result<()>;

    /// Receives into `values` what rank `from` sent with `tag`.
    fn receive(&self, from: usize, values: &mut [f32], tag: u16) -> Result<()>;

    /// Returns once every send this rank posted has completed.
    fn flush(&self) -> Result<()>;

    /// Replaces `values` by their element-wise sum over the ranks.
    fn sum(&self, values: &mut [f32]) -> Result<()>;
}

/// The blocks of each stage this rank holds of a model of `config`, in order: stage
/// `chunk · ranks + rank` of `ranks · stages_per_rank` for each chunk.
pub fn layers_of(config: &LlamaConfig, stages: &dyn Stages) -> Result<Vec<Range<usize>>> {
    layers_of_rank(config, stages, stages.rank())
}

/// [`layers_of`] for pipeline rank `rank`.
fn layers_of_rank(
    config: &LlamaConfig,
    stages: &dyn Stages,
    rank: usize,
) -> Result<Vec<Range<usize>>> {
    let (p, v) = (stages.ranks(), stages.stages_per_rank());
    (0..v)
        .map(|chunk| stage_layers(config.n_layers, p * v, chunk * p + rank).map_err(Error::Data))
        .collect()
}

/// One pass of a rank's schedule: micro-batch `micro` through its stage `chunk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// The forward pass.
    Forward { micro: usize, chunk: usize },
    /// The backward pass.
    Backward { micro: usize, chunk: usize },
}

/// Rank `rank`'s passes, in order, for `micro` micro-batches on a pipeline of `ranks` ranks of
/// `chunks` stages each: the 1F1B schedule, interleaved when `chunks` is above 1 (Megatron-LM's
/// order; its micro-batches must then be a multiple of `ranks`).
pub fn schedule(ranks: usize, rank: usize, chunks: usize, micro: usize) -> Result<Vec<Pass>> {
    if chunks > 1 && !micro.is_multiple_of(ranks) {
        return Err(Error::Data(format!(
            "the interleaved schedule needs the micro-batches of a step ({micro}) to be a \
             multiple of pp ({ranks}): change batch_rows, micro_batch_rows or dp"
        )));
    }
    let total = micro * chunks;
    // The k-th forward (or backward) pass of this rank: groups of `ranks` micro-batches go
    // through its stages in turn (backward, from its last stage).
    let pass = |k: usize, backward: bool| {
        let group = k % (ranks * chunks) / ranks;
        let chunk = if backward { chunks - 1 - group } else { group };
        (k / (ranks * chunks) * ranks + k % ranks, chunk)
    };
    let warmup = match chunks {
        1 => ranks - rank - 1,
        _ => (ranks - rank - 1) * 2 + (chunks - 1) * ranks,
    }
    .min(total);
    let forward = |k| {
        let (micro, chunk) = pass(k, false);
        Pass::Forward { micro, chunk }
    };
    let backward = |k| {
        let (micro, chunk) = pass(k, true);
        Pass::Backward { micro, chunk }
    };
    let mut passes: Vec<Pass> = (0..warmup).map(forward).collect();
    for i in 0..total - warmup {
        passes.push(forward(warmup + i));
        passes.push(backward(i));
    }
    passes.extend((total - warmup..total).map(backward));
    Ok(passes)
}

/// A micro-batch between its forward and its backward pass on one of this rank's stages.
struct InFlight {
    micro: usize,
    /// The received hidden states as a variable the backward pass reaches (`None` on the first
    /// stage, whose input is tokens).
    input: Option<Var>,
    /// The hidden states sent on, or on the last stage the micro-batch's share of the loss.
    output: Tensor,
}

/// One rank's view of a batch: its stages' models and its part of each micro-batch.
struct Schedule<'a> {
    /// This rank's stages, in order.
    models: &'a [Llama],
    stages: &'a dyn Stages,
    /// This rank's tensors of each micro-batch, made once for all its stages.
    parts: Vec<PartTensors>,
    /// What each micro-batch's loss sum is divided by.
    n_targets: usize,
}

/// Which way a message between stages goes.
#[derive(Clone, Copy)]
enum Direction {
    Forward,
    Backward,
}

impl<'a> Schedule<'a> {
    /// `batch` in micro-batches of `micro_rows` rows, of `sequence`'s part of each row when the
    /// rows are split, through `models`.
    fn new(
        models: &'a [Llama],
        stages: &'a dyn Stages,
        (batch, micro_rows, n_targets): (&Batch, usize, usize),
        sequence: Option<&Arc<dyn Parts>>,
    ) -> Result<Schedule<'a>> {
        let parts = micro_batches(batch, micro_rows)
            .iter()
            .map(|micro| part_tensors(micro, &models[0], sequence))
            .collect::<Result<_>>()?;
        Ok(Schedule {
            models,
            stages,
            parts,
            n_targets: n_targets.max(1),
        })
    }

    /// The number of stage `chunk` of this rank in the whole pipeline.
    fn stage(&self, chunk: usize) -> usize {
        chunk * self.stages.ranks() + self.stages.rank()
    }

    fn is_first(&self, chunk: usize) -> bool {
        self.stage(chunk) == 0
    }

    fn is_last(&self, chunk: usize) -> bool {
        self.stage(chunk) + 1 == self.stages.ranks() * self.models.len()
    }

    fn next_rank(&self) -> usize {
        (self.stages.rank() + 1) % self.stages.ranks()
    }

    fn previous_rank(&self) -> usize {
        (self.stages.rank() + self.stages.ranks() - 1) % self.stages.ranks()
    }

    /// The tag of micro-batch `micro`'s message to stage `stage` going `direction`.
    fn tag(&self, micro: usize, stage: usize, direction: Direction) -> Result<u16> {
        let stages = self.stages.ranks() * self.models.len();
        let tag =
            1 + 2 * (micro * stages + stage) + matches!(direction, Direction::Backward) as usize;
        // MPI promises tags up to 32,767.
        u16::try_from(tag)
            .ok()
            .filter(|&t| t <= 32_767)
            .ok_or_else(|| {
                Error::Data(format!(
                "{} micro-batches × {stages} stages are more messages per step than a pipeline \
                 tags: use fewer micro-batches per step",
                self.parts.len()
            ))
            })
    }

    fn hidden(&self, values: Vec<f32>, dims: &[usize]) -> Result<Tensor> {
        let model = &self.models[0];
        Ok(Tensor::from_vec(values, dims, model.device())?.to_dtype(model.dtype())?)
    }

    /// Micro-batch `micro`'s forward pass through stage `chunk`, from the previous stage's hidden
    /// states (received here) or the tokens; the output goes on to the next stage. With
    /// `track`, its input and graph are kept for the backward pass.
    fn forward(&self, micro: usize, chunk: usize, track: bool) -> Result<InFlight> {
        let part = &self.parts[micro];
        let model = &self.models[chunk];
        let received = match self.is_first(chunk) {
            true => None,
            false => {
                let layout = &part.layout;
                let dims = [layout.batch(), layout.seq_len(), model.config().dim];
                let mut values = vec![0.0f32; dims.iter().product()];
                let tag = self.tag(micro, self.stage(chunk), Direction::Forward)?;
                self.stages
                    .receive(self.previous_rank(), &mut values, tag)?;
                Some(self.hidden(values, &dims)?)
            }
        };
        let input = match (&received, track) {
            (Some(hidden), true) => Some(Var::from_tensor(hidden)?),
            _ => None,
        };
        let x = match (&input, &received) {
            (Some(var), _) => var.as_tensor(),
            (None, Some(hidden)) => hidden,
            (None, None) => &part.inputs,
        };
        let out = model.stage_forward(x, &part.layout)?;
        let output = match self.is_last(chunk) {
            true => (logits_nll_sum(model, &out, part)? / self.n_targets as f64)?,
            false => {
                let tag = self.tag(micro, self.stage(chunk) + 1, Direction::Forward)?;
                self.stages.send(self.next_rank(), values(&out)?, tag)?;
                out
            }
        };
        Ok(InFlight {
            micro,
            input,
            output,
        })
    }

    /// The backward pass of `flight` through stage `chunk`, from the gradient of its output the
    /// next stage sends (none on the last stage, whose output is the loss): the gradients of the
    /// stage's parameters are added to theirs in `grads` (in parameter order), its input's
    /// gradient goes to the previous stage.
    fn backward(
        &self,
        params: &Parameters,
        chunk: usize,
        flight: InFlight,
        grads: &mut [Option<Tensor>],
    ) -> Result<()> {
        let micro = flight.micro;
        let objective = match self.is_last(chunk) {
            true => flight.output,
            false => {
                let mut gradient = vec![0.0f32; flight.output.elem_count()];
                let tag = self.tag(micro, self.stage(chunk), Direction::Backward)?;
                self.stages.receive(self.next_rank(), &mut gradient, tag)?;
                let upstream = self.hidden(gradient, flight.output.dims())?;
                (flight.output * upstream)?.sum_all()?
            }
        };
        let mut store = objective.backward()?;
        for (sum, var) in grads.iter_mut().zip(params.vars()) {
            if let Some(g) = store.remove(var.as_tensor()) {
                *sum = Some(match sum.take() {
                    None => g.detach(),
                    Some(sum) => (sum + g.detach())?,
                });
            }
        }
        if let Some(input) = flight.input {
            let gradient = store.remove(input.as_tensor()).ok_or_else(|| {
                Error::Data("no gradient reached the stage's input hidden states".into())
            })?;
            let tag = self.tag(micro, self.stage(chunk) - 1, Direction::Backward)?;
            self.stages
                .send(self.previous_rank(), values(&gradient)?, tag)?;
        }
        Ok(())
    }
}

/// `t`'s values in f32, flattened (what goes between stages and through collectives).
pub fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

/// This rank's share of `batch`'s loss and gradients on the (interleaved) 1F1B schedule through
/// its stages `models`, in micro-batches of `micro_rows` rows, as
/// [`crate::step::loss_and_grads_of_share`] computes them in one process: the gradients of
/// this rank's parameters, and the loss (over every stage: each rank returns it).
pub fn loss_and_grads_of_share(
    models: &[Llama],
    params: &Parameters,
    (batch, micro_rows, n_targets): (&Batch, usize, usize),
    sequence: Option<&Arc<dyn Parts>>,
    stages: &dyn Stages,
) -> Result<Gradients> {
    let schedule = Schedule::new(models, stages, (batch, micro_rows, n_targets), sequence)?;
    let chunks = models.len();
    let passes = self::schedule(stages.ranks(), stages.rank(), chunks, schedule.parts.len())?;
    let mut in_flight: Vec<VecDeque<InFlight>> = (0..chunks).map(|_| VecDeque::new()).collect();
    let mut grads: Vec<Option<Tensor>> = vec![None; params.vars().len()];
    let mut loss = 0.0f64;
    for pass in passes {
        match pass {
            Pass::Forward { micro, chunk } => {
                let flight = schedule.forward(micro, chunk, true)?;
                if schedule.is_last(chunk) {
                    loss += flight.output.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                }
                in_flight[chunk].push_back(flight);
            }
            Pass::Backward { micro, chunk } => {
                let flight = in_flight[chunk].pop_front().filter(|f| f.micro == micro);
                let flight = flight.ok_or_else(|| {
                    Error::Data(format!(
                        "the schedule runs micro-batch {micro} backward before forward"
                    ))
                })?;
                schedule.backward(params, chunk, flight, &mut grads)?;
            }
        }
    }
    stages.flush()?;
    let grads = grads
        .into_iter()
        .zip(params.names())
        .map(|(g, name)| g.ok_or_else(|| Error::Data(format!("no gradient reached {name}"))))
        .collect::<Result<_>>()?;
    let mut total = [loss as f32];
    stages.sum(&mut total)?;
    Ok(Gradients {
        loss: f64::from(total[0]),
        grads,
        n_targets: batch.n_targets(),
    })
}

/// Mean loss of `batch` under this rank's stages `models` of a frozen model (as
/// [`crate::step::evaluate`]): each micro-batch's hidden states go from stage to stage, the last
/// stage sums the losses, and every rank returns the mean (over the `sequence` parts too when
/// the rows are split).
pub fn evaluate(
    models: &[Llama],
    batch: &Batch,
    micro_rows: usize,
    sequence: Option<&Arc<dyn Parts>>,
    stages: &dyn Stages,
) -> Result<f64> {
    let schedule = Schedule::new(models, stages, (batch, micro_rows, 1), sequence)?;
    let mut sum = 0.0f64;
    for micro in 0..schedule.parts.len() {
        for chunk in 0..models.len() {
            let flight = schedule.forward(micro, chunk, false)?;
            if schedule.is_last(chunk) {
                sum += flight.output.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            }
        }
    }
    stages.flush()?;
    let mut total = [sum as f32];
    stages.sum(&mut total)?;
    if let Some(parts) = sequence {
        parts.sum(&mut total)?;
    }
    Ok(f64::from(total[0]) / batch.n_targets().max(1) as f64)
}

/// The whole model's weights on the first rank: every other rank sends it its tensors (`mine`,
/// whole over tensor parallelism), in [`tensor_shapes`] order; the first rank returns them all,
/// the others `mine`. Every rank calls it.
pub fn gather_on_first_stage(
    config: &LlamaConfig,
    mine: Weights,
    stages: &dyn Stages,
) -> Result<Weights> {
    // The tensors rank `rank`'s stages hold, in order.
    let held = |rank: usize| -> Result<Vec<(String, Vec<usize>)>> {
        let chunks = layers_of_rank(config, stages, rank)?;
        Ok(tensor_shapes(config)
            .into_iter()
            .filter(|(name, _)| chunks.iter().any(|l| holds(name, l, config.n_layers)))
            .collect())
    };
    const WEIGHTS_TAG: u16 = 0;
    if stages.rank() > 0 {
        for (name, dims) in held(stages.rank())? {
            let tensor = mine.get(&name, &dims)?.to_dense(DType::F32)?;
            stages.send(0, values(&tensor)?, WEIGHTS_TAG)?;
        }
        stages.flush()?;
        return Ok(mine);
    }
    let mut whole = mine;
    let device = candle_core::Device::Cpu;
    for from in 1..stages.ranks() {
        for (name, dims) in held(from)? {
            let mut received = vec![0.0f32; dims.iter().product()];
            stages.receive(from, &mut received, WEIGHTS_TAG)?;
            let tensor = Tensor::from_vec(received, dims.as_slice(), &device)?;
            whole.insert(name, Weight::Dense(tensor));
        }
    }
    Ok(whole)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::mpsc::{channel, Receiver, Sender};
    use std::sync::Mutex;

    use candle_core::Device;

    use super::*;
    use crate::step::loss_and_grads;

    /// A tagged message between threads.
    type Message = (u16, Vec<f32>);

    /// Messages that arrived before their receive, by sender and tag.
    type Early = HashMap<(usize, u16), VecDeque<Vec<f32>>>;

    /// Threads of one process as a pipeline's ranks, each pair joined by a channel each way;
    /// messages that arrive before their receive waits for them are kept by tag.
    #[derive(Debug)]
    struct Channels {
        rank: usize,
        chunks: usize,
        to: Vec<Sender<Message>>,
        from: Vec<Mutex<Receiver<Message>>>,
        early: Mutex<Early>,
    }

    impl Channels {
        fn pipeline(ranks: usize, chunks: usize) -> Vec<Channels> {
            let mut senders: Vec<Vec<Sender<Message>>> = vec![Vec::new(); ranks];
            let mut receivers: Vec<Vec<Mutex<Receiver<Message>>>> =
                (0..ranks).map(|_| Vec::new()).collect();
            // senders[a][b] reaches receivers[b][a].
            for sending in senders.iter_mut() {
                for receiving in receivers.iter_mut() {
                    let (tx, rx) = channel();
                    sending.push(tx);
                    receiving.push(Mutex::new(rx));
                }
            }
            senders
                .into_iter()
                .zip(receivers)
                .enumerate()
                .map(|(rank, (to, from))| Channels {
                    rank,
                    chunks,
                    to,
                    from,
                    early: Mutex::new(HashMap::new()),
                })
                .collect()
        }
    }

    impl Stages for Channels {
        fn ranks(&self) -> usize {
            self.to.len()
        }

        fn rank(&self) -> usize {
            self.rank
        }

        fn stages_per_rank(&self) -> usize {
            self.chunks
        }

        fn send(&self, to: usize, values: Vec<f32>, tag: u16) -> Result<()> {
            self.to[to].send((tag, values)).unwrap();
            Ok(())
        }

        fn receive(&self, from: usize, values: &mut [f32], tag: u16) -> Result<()> {
            let got = loop {
                let kept = self
                    .early
                    .lock()
                    .unwrap()
                    .get_mut(&(from, tag))
                    .and_then(|q| q.pop_front());
                if let Some(got) = kept {
                    break got;
                }
                let (t, got) = self.from[from].lock().unwrap().recv().unwrap();
                if t == tag {
                    break got;
                }
                self.early
                    .lock()
                    .unwrap()
                    .entry((from, t))
                    .or_default()
                    .push_back(got);
            };
            assert_eq!(
                got.len(),
                values.len(),
                "rank {} from {from}, tag {tag}",
                self.rank
            );
            values.copy_from_slice(&got);
            Ok(())
        }

        fn flush(&self) -> Result<()> {
            Ok(())
        }

        fn sum(&self, values: &mut [f32]) -> Result<()> {
            // Every rank sends its values to every other, then adds theirs in rank order.
            const SUM_TAG: u16 = u16::MAX;
            for to in (0..self.ranks()).filter(|&r| r != self.rank) {
                self.send(to, values.to_vec(), SUM_TAG)?;
            }
            let mut total = vec![0.0f32; values.len()];
            for from in 0..self.ranks() {
                let mut theirs = values.to_vec();
                if from != self.rank {
                    self.receive(from, &mut theirs, SUM_TAG)?;
                }
                total.iter_mut().zip(&theirs).for_each(|(t, v)| *t += v);
            }
            values.copy_from_slice(&total);
            Ok(())
        }
    }

    fn config() -> LlamaConfig {
        LlamaConfig {
            vocab_size: 96,
            dim: 32,
            n_layers: 10,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 8,
            ffn_dim: 64,
            norm_eps: 1e-5,
            rope_theta: 10_000.0,
            rope_scaling: None,
            max_seq_len: 16,
            tie_embeddings: false,
        }
    }

    /// Six rows of packed documents.
    fn batch() -> Batch {
        let rows = 6;
        let seq_len = 8;
        let ids: Vec<u32> = (0..rows * seq_len + 1)
            .map(|i| (i * 37 % 96) as u32)
            .collect();
        Batch {
            rows,
            seq_len,
            inputs: ids[..rows * seq_len].to_vec(),
            targets: ids[1..].to_vec(),
            weights: (0..rows * seq_len)
                .map(|i| f32::from(u8::from(i % 5 != 4)))
                .collect(),
            doc_lens: (0..rows).map(|r| vec![3 + r % 2, 5 - r % 2]).collect(),
        }
    }

    /// What each rank computes: its loss, its parameters' names and gradients, its validation
    /// loss, and the whole weights gathered on it.
    type Outcome = (f64, Vec<String>, Vec<Tensor>, f64, Weights);

    fn run_pipeline(ranks: usize, chunks: usize, micro_rows: usize) -> Result<Vec<Outcome>> {
        std::thread::scope(|s| {
            let handles: Vec<_> = Channels::pipeline(ranks, chunks)
                .into_iter()
                .map(|link| {
                    s.spawn(move || -> Result<Outcome> {
                        let dev = Device::Cpu;
                        let layers = layers_of(&config(), &link)?;
                        let params =
                            Parameters::init(&config(), 5, DType::F32, &dev)?.stages(&layers)?;
                        let (models, b) = (params.models()?, batch());
                        let work = (&b, micro_rows, b.n_targets());
                        let g = loss_and_grads_of_share(&models, &params, work, None, &link)?;
                        let frozen = params.frozen_models()?;
                        let val = evaluate(&frozen, &b, micro_rows, None, &link)?;
                        let whole = gather_on_first_stage(&config(), params.weights(), &link)?;
                        Ok((g.loss, params.names().to_vec(), g.grads, val, whole))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    /// Every rank's passes run each micro-batch through each of its stages forward once and
    /// backward once, forward first; 1F1B keeps at most `ranks − rank` micro-batches in flight.
    #[test]
    fn schedules_run_every_pass_once_and_forward_first() {
        for (ranks, chunks, micro) in [(2, 1, 4), (4, 1, 3), (2, 2, 4), (3, 2, 6), (4, 3, 8)] {
            for rank in 0..ranks {
                let passes = schedule(ranks, rank, chunks, micro).unwrap();
                assert_eq!(passes.len(), 2 * micro * chunks);
                let (mut forward, mut in_flight, mut most) = (Vec::new(), 0usize, 0);
                for pass in &passes {
                    match *pass {
                        Pass::Forward { micro, chunk } => {
                            assert!(!forward.contains(&(micro, chunk)));
                            forward.push((micro, chunk));
                            in_flight += 1;
                            most = most.max(in_flight);
                        }
                        Pass::Backward { micro, chunk } => {
                            assert!(forward.contains(&(micro, chunk)), "{pass:?} before forward");
                            in_flight -= 1;
                        }
                    }
                }
                if chunks == 1 {
                    assert!(
                        most <= ranks - rank,
                        "rank {rank} of {ranks}: {most} in flight"
                    );
                }
            }
        }
        assert_eq!(
            schedule(2, 0, 1, 3).unwrap(),
            [
                Pass::Forward { micro: 0, chunk: 0 },
                Pass::Forward { micro: 1, chunk: 0 },
                Pass::Backward { micro: 0, chunk: 0 },
                Pass::Forward { micro: 2, chunk: 0 },
                Pass::Backward { micro: 1, chunk: 0 },
                Pass::Backward { micro: 2, chunk: 0 },
            ]
        );
        let err = schedule(2, 0, 2, 3).unwrap_err().to_string();
        assert!(err.contains("multiple of pp (2)"), "{err}");
    }

    /// Two and three ranks on the 1F1B schedule and on the interleaved one, with as many
    /// micro-batches as stages, more and fewer: each rank's gradients are the whole model's for
    /// its parameters, every rank has the whole loss, and the first gathers the whole model's
    /// weights.
    #[test]
    fn pipelines_compute_the_whole_models_loss_and_gradients() {
        let dev = Device::Cpu;
        let whole = Parameters::init(&config(), 5, DType::F32, &dev).unwrap();
        let initial = whole.weights();
        let val = crate::step::evaluate(&whole.frozen_model().unwrap(), &batch(), 2, None).unwrap();
        let cases = [
            (2, 1, 1),
            (2, 1, 4),
            (3, 1, 1),
            (3, 1, 6),
            (2, 2, 1),
            (2, 2, 3),
            (3, 2, 2),
            (2, 3, 1),
        ];
        for (ranks, chunks, micro_rows) in cases {
            let reference =
                loss_and_grads(&whole.model().unwrap(), &whole, &batch(), micro_rows).unwrap();
            let outcomes = run_pipeline(ranks, chunks, micro_rows).unwrap();
            let mut seen = 0;
            for (rank, (loss, names, grads, rank_val, gathered)) in outcomes.iter().enumerate() {
                let what = format!("{ranks} ranks × {chunks} stages, micro-batches of {micro_rows} rows, rank {rank}");
                assert!(
                    (loss - reference.loss).abs() <= 1e-6 * reference.loss,
                    "{what}: {loss}"
                );
                assert!(
                    (rank_val - val).abs() <= 1e-5 * val,
                    "{what}: {rank_val} vs {val}"
                );
                for (name, grad) in names.iter().zip(grads) {
                    let i = whole.names().iter().position(|n| n == name).unwrap();
                    let diff = (grad - &reference.grads[i]).unwrap().abs().unwrap();
                    let diff = diff.max_all().unwrap().to_scalar::<f32>().unwrap();
                    assert!(diff < 1e-6, "{what}, {name}: {diff}");
                    seen += 1;
                }
                if rank == 0 {
                    for (name, dims) in tensor_shapes(&config()) {
                        let values = |w: &Weights| {
                            let t = w.get(&name, &dims).unwrap().to_dense(DType::F32).unwrap();
                            t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                        };
                        assert_eq!(values(gathered), values(&initial), "{what}: {name}");
                    }
                }
            }
            assert_eq!(seen, whole.names().len(), "every parameter on one rank");
        }
        // 3 micro-batches do not interleave over 2 ranks: every rank says so, none hangs.
        let err = run_pipeline(2, 2, 2).unwrap_err().to_string();
        assert!(err.contains("multiple of pp"), "{err}");
    }
}

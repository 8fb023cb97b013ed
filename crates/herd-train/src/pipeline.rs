//! Pipeline parallelism (paper §3.3.1): the model's blocks cut into consecutive stages
//! ([`herd_model::stage`]), each held by its own process, and every batch's micro-batches passed
//! from stage to stage — hidden states forward, their gradients backward — on the 1F1B schedule
//! (PipeDream-Flush, Megatron-LM's non-interleaved schedule): stage s of P first runs the forward
//! passes of P − s − 1 micro-batches, then alternates one forward and one backward, then runs
//! the backward passes left. A stage so keeps at most P − s micro-batches' activations, and
//! every stage's gradients are the sums over the micro-batches that one process would compute.
//!
//! How stages exchange values is [`Stages`], implemented outside (herd-parallel, over MPI); a
//! send to the next stage and a receive from it that must not wait for each other are one
//! [`Stages::exchange`]. A stage's backward pass starts from its output and the gradient the
//! next stage sent for it: the gradient of `sum(output · upstream)`, which is exactly the chain
//! rule's vector–Jacobian product, reaches the stage's parameters and its input.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::sync::Arc;

use candle_core::{DType, Tensor, Var};
use herd_model::llama::tensor_shapes;
use herd_model::split::Parts;
use herd_model::stage::{holds, stage_layers};
use herd_model::{Llama, LlamaConfig, Weight, Weights};

use crate::error::{Error, Result};
use crate::loader::Batch;
use crate::params::Parameters;
use crate::step::{
    accumulate, logits_nll_sum, micro_batches, parameter_gradients, part_tensors, Gradients,
    PartTensors, Unused,
};

/// The exchange between the stages of a pipeline. Every stage calls the methods its schedule
/// says; a send is matched by the receiving stage's receive of the same length.
pub trait Stages: Debug + Send + Sync {
    /// Stages in the pipeline.
    fn stages(&self) -> usize;

    /// This process's stage, `0..stages()`.
    fn stage(&self) -> usize;

    /// Sends `values` to stage `to`.
    fn send(&self, to: usize, values: &[f32]) -> Result<()>;

    /// Receives into `values` what stage `from` sent.
    fn receive(&self, from: usize, values: &mut [f32]) -> Result<()>;

    /// Sends `values` to stage `peer` and receives what it sends into `into`, neither waiting
    /// for the other (two neighbours that both send and then receive would wait forever).
    fn exchange(&self, peer: usize, values: &[f32], into: &mut [f32]) -> Result<()>;

    /// Replaces `values` by their element-wise sum over the stages.
    fn sum(&self, values: &mut [f32]) -> Result<()>;
}

/// The blocks this process's stage holds of a model of `config`.
pub fn layers_of(config: &LlamaConfig, stages: &dyn Stages) -> Result<std::ops::Range<usize>> {
    stage_layers(config.n_layers, stages.stages(), stages.stage()).map_err(Error::Data)
}

/// A micro-batch between its forward and its backward pass on this stage.
struct InFlight {
    /// The received hidden states as a variable the backward pass reaches (`None` on the first
    /// stage, whose input is tokens).
    input: Option<Var>,
    /// The hidden states sent on, or on the last stage the micro-batch's share of the loss.
    output: Tensor,
}

/// One stage's view of a batch: the micro-batches, the model and how its part is laid out.
struct Schedule<'a> {
    model: &'a Llama,
    stages: &'a dyn Stages,
    micro: Vec<Batch>,
    sequence: Option<&'a Arc<dyn Parts>>,
    /// What each micro-batch's loss sum is divided by.
    n_targets: usize,
}

impl Schedule<'_> {
    fn is_first(&self) -> bool {
        self.stages.stage() == 0
    }

    fn is_last(&self) -> bool {
        self.stages.stage() + 1 == self.stages.stages()
    }

    fn part(&self, i: usize) -> Result<PartTensors> {
        part_tensors(&self.micro[i], self.model, self.sequence)
    }

    /// The shape of the hidden states between stages for micro-batch `i`.
    fn hidden_dims(&self, part: &PartTensors) -> [usize; 3] {
        let layout = &part.layout;
        [layout.batch(), layout.seq_len(), self.model.config().dim]
    }

    /// Receives micro-batch `i`'s hidden states from the previous stage (`None` on the first).
    fn receive_forward(&self, i: usize) -> Result<Option<Tensor>> {
        if self.is_first() {
            return Ok(None);
        }
        let dims = self.hidden_dims(&self.part(i)?);
        let mut values = vec![0.0f32; dims.iter().product()];
        self.stages.receive(self.stages.stage() - 1, &mut values)?;
        Ok(Some(self.hidden(values, dims)?))
    }

    fn hidden(&self, values: Vec<f32>, dims: [usize; 3]) -> Result<Tensor> {
        let model = self.model;
        Ok(Tensor::from_vec(values, &dims[..], model.device())?.to_dtype(model.dtype())?)
    }

    /// Micro-batch `i`'s forward pass on this stage from `received` (the previous stage's
    /// hidden states; tokens on the first stage). With `track`, its input and graph are kept
    /// for the backward pass.
    fn forward(&self, i: usize, received: Option<Tensor>, track: bool) -> Result<InFlight> {
        let part = self.part(i)?;
        let input = match (&received, track) {
            (Some(hidden), true) => Some(Var::from_tensor(hidden)?),
            _ => None,
        };
        let x = match (&input, &received) {
            (Some(var), _) => var.as_tensor(),
            (None, Some(hidden)) => hidden,
            (None, None) => &part.inputs,
        };
        let out = self.model.stage_forward(x, &part.layout)?;
        let output = match self.is_last() {
            true => (logits_nll_sum(self.model, &out, &part)? / self.n_targets as f64)?,
            false => out,
        };
        Ok(InFlight { input, output })
    }

    /// The backward pass of `flight` from `upstream` (the next stage's gradient of its output;
    /// `None` on the last stage, whose output is the loss): the stage's parameter gradients are
    /// added to `grads`; returns the gradient of its input to send back (`None` on the first).
    fn backward(
        &self,
        params: &Parameters,
        flight: InFlight,
        upstream: Option<Tensor>,
        grads: &mut Option<Vec<Tensor>>,
    ) -> Result<Option<Vec<f32>>> {
        let objective = match upstream {
            None => flight.output,
            Some(upstream) => (flight.output * upstream)?.sum_all()?,
        };
        let mut store = objective.backward()?;
        accumulate(
            grads,
            parameter_gradients(params, &mut store, Unused::Error)?,
        )?;
        let Some(input) = flight.input else {
            return Ok(None);
        };
        let gradient = store.remove(input.as_tensor()).ok_or_else(|| {
            Error::Data("no gradient reached the stage's input hidden states".into())
        })?;
        Ok(Some(values(&gradient)?))
    }
}

/// `t`'s values in f32, flattened (what goes between stages).
fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

/// This stage's share of `batch`'s loss and gradients on the 1F1B schedule, in micro-batches of
/// `micro_rows` rows, as [`crate::step::loss_and_grads_of_share`] computes them in one process:
/// the gradients of this stage's parameters, and the loss (over every stage: each returns it).
pub fn loss_and_grads_of_share(
    model: &Llama,
    params: &Parameters,
    batch: &Batch,
    micro_rows: usize,
    n_targets: usize,
    sequence: Option<&Arc<dyn Parts>>,
    stages: &dyn Stages,
) -> Result<Gradients> {
    let schedule = Schedule {
        model,
        stages,
        micro: micro_batches(batch, micro_rows),
        sequence,
        n_targets: n_targets.max(1),
    };
    let (m, stage) = (schedule.micro.len(), stages.stage());
    let (next, previous) = (stage + 1, stage.wrapping_sub(1));
    let warmup = (stages.stages() - stage - 1).min(m);
    let mut in_flight = VecDeque::new();
    let mut grads = None;
    let mut loss = 0.0f64;
    let mut account = |flight: &InFlight| -> Result<()> {
        if schedule.is_last() {
            loss += flight.output.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        }
        Ok(())
    };
    // Warm-up: forward passes only.
    for i in 0..warmup {
        let flight = schedule.forward(i, schedule.receive_forward(i)?, true)?;
        stages.send(next, &values(&flight.output)?)?;
        in_flight.push_back(flight);
    }
    // Steady state: one forward, one backward.
    let mut received = match warmup < m {
        true => schedule.receive_forward(warmup)?,
        false => None,
    };
    for i in warmup..m {
        let flight = schedule.forward(i, received.take(), true)?;
        account(&flight)?;
        let sent = (!schedule.is_last())
            .then(|| values(&flight.output))
            .transpose()?;
        in_flight.push_back(flight);
        // The gradient that comes back is the oldest micro-batch's.
        let oldest = in_flight.pop_front().expect("just pushed");
        let upstream = match sent {
            None => None,
            Some(sent) => {
                let mut gradient = vec![0.0f32; oldest.output.elem_count()];
                stages.exchange(next, &sent, &mut gradient)?;
                Some(schedule.hidden(gradient, oldest.output.dims3()?.into())?)
            }
        };
        let gradient = schedule.backward(params, oldest, upstream, &mut grads)?;
        if let Some(gradient) = gradient {
            if i + 1 < m {
                let dims = schedule.hidden_dims(&schedule.part(i + 1)?);
                let mut hidden = vec![0.0f32; dims.iter().product()];
                stages.exchange(previous, &gradient, &mut hidden)?;
                received = Some(schedule.hidden(hidden, dims)?);
            } else {
                stages.send(previous, &gradient)?;
            }
        }
    }
    // Cool-down: the backward passes of the warm-up's micro-batches.
    while let Some(flight) = in_flight.pop_front() {
        let mut gradient = vec![0.0f32; flight.output.elem_count()];
        stages.receive(next, &mut gradient)?;
        let upstream = schedule.hidden(gradient, flight.output.dims3()?.into())?;
        if let Some(gradient) = schedule.backward(params, flight, Some(upstream), &mut grads)? {
            stages.send(previous, &gradient)?;
        }
    }
    let mut total = [loss as f32];
    stages.sum(&mut total)?;
    Ok(Gradients {
        loss: f64::from(total[0]),
        grads: grads.unwrap_or_default(),
        n_targets: batch.n_targets(),
    })
}

/// Mean loss of `batch` under the stages of a frozen model (as [`crate::step::evaluate`]):
/// each micro-batch's hidden states go from stage to stage, the last stage sums the losses,
/// and every stage returns the mean (over the `sequence` parts too when the rows are split).
pub fn evaluate(
    model: &Llama,
    batch: &Batch,
    micro_rows: usize,
    sequence: Option<&Arc<dyn Parts>>,
    stages: &dyn Stages,
) -> Result<f64> {
    let schedule = Schedule {
        model,
        stages,
        micro: micro_batches(batch, micro_rows),
        sequence,
        n_targets: 1,
    };
    let mut sum = 0.0f64;
    for i in 0..schedule.micro.len() {
        let flight = schedule.forward(i, schedule.receive_forward(i)?, false)?;
        match schedule.is_last() {
            true => sum += flight.output.to_dtype(DType::F64)?.to_scalar::<f64>()?,
            false => stages.send(stages.stage() + 1, &values(&flight.output)?)?,
        }
    }
    let mut total = [sum as f32];
    stages.sum(&mut total)?;
    if let Some(parts) = sequence {
        parts.sum(&mut total)?;
    }
    Ok(f64::from(total[0]) / batch.n_targets().max(1) as f64)
}

/// The whole model's weights on the first stage: every other stage sends it its tensors
/// (`mine`, whole over tensor parallelism), in [`tensor_shapes`] order; the first stage returns
/// them all, the others `mine`. Every stage calls it.
pub fn gather_on_first_stage(
    config: &LlamaConfig,
    mine: Weights,
    stages: &dyn Stages,
) -> Result<Weights> {
    let stage = stages.stage();
    let shapes = tensor_shapes(config);
    if stage > 0 {
        let layers = layers_of(config, stages)?;
        for (name, dims) in shapes
            .iter()
            .filter(|(n, _)| holds(n, &layers, config.n_layers))
        {
            let tensor = mine.get(name, dims)?.to_dense(DType::F32)?;
            stages.send(0, &values(&tensor)?)?;
        }
        return Ok(mine);
    }
    let mut whole = mine;
    let device = candle_core::Device::Cpu;
    for from in 1..stages.stages() {
        let layers = stage_layers(config.n_layers, stages.stages(), from).map_err(Error::Data)?;
        for (name, dims) in shapes
            .iter()
            .filter(|(n, _)| holds(n, &layers, config.n_layers))
        {
            let mut received = vec![0.0f32; dims.iter().product()];
            stages.receive(from, &mut received)?;
            let tensor = Tensor::from_vec(received, dims.as_slice(), &device)?;
            whole.insert(name.clone(), Weight::Dense(tensor));
        }
    }
    Ok(whole)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{channel, Receiver, Sender};
    use std::sync::Mutex;

    use candle_core::Device;

    use super::*;
    use crate::step::loss_and_grads;

    /// Threads of one process as a pipeline's stages, each pair joined by a channel each way.
    #[derive(Debug)]
    struct Channels {
        stage: usize,
        to: Vec<Sender<Vec<f32>>>,
        from: Vec<Mutex<Receiver<Vec<f32>>>>,
    }

    impl Channels {
        fn pipeline(stages: usize) -> Vec<Channels> {
            let mut senders: Vec<Vec<Sender<Vec<f32>>>> = vec![Vec::new(); stages];
            let mut receivers: Vec<Vec<Mutex<Receiver<Vec<f32>>>>> =
                (0..stages).map(|_| Vec::new()).collect();
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
                .map(|(stage, (to, from))| Channels { stage, to, from })
                .collect()
        }
    }

    impl Stages for Channels {
        fn stages(&self) -> usize {
            self.to.len()
        }

        fn stage(&self) -> usize {
            self.stage
        }

        fn send(&self, to: usize, values: &[f32]) -> Result<()> {
            self.to[to].send(values.to_vec()).unwrap();
            Ok(())
        }

        fn receive(&self, from: usize, values: &mut [f32]) -> Result<()> {
            let got = self.from[from].lock().unwrap().recv().unwrap();
            assert_eq!(got.len(), values.len(), "stage {} from {from}", self.stage);
            values.copy_from_slice(&got);
            Ok(())
        }

        fn exchange(&self, peer: usize, values: &[f32], into: &mut [f32]) -> Result<()> {
            self.send(peer, values)?;
            self.receive(peer, into)
        }

        fn sum(&self, values: &mut [f32]) -> Result<()> {
            // Every stage sends its values to every other, then adds theirs in stage order.
            for to in (0..self.stages()).filter(|&s| s != self.stage) {
                self.send(to, values)?;
            }
            let mut total = vec![0.0f32; values.len()];
            for from in 0..self.stages() {
                let mut theirs = values.to_vec();
                if from != self.stage {
                    self.receive(from, &mut theirs)?;
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
            n_layers: 4,
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

    /// Five rows of packed documents (the last micro-batch of two rows is shorter).
    fn batch() -> Batch {
        let rows = 5;
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

    /// What each stage computes: its loss, its parameters' names and gradients, its validation
    /// loss, and the whole weights gathered on it.
    type Outcome = (f64, Vec<String>, Vec<Tensor>, f64, Weights);

    fn run_stages(stages: usize, micro_rows: usize) -> Vec<Outcome> {
        std::thread::scope(|s| {
            let handles: Vec<_> = Channels::pipeline(stages)
                .into_iter()
                .map(|link| {
                    s.spawn(move || {
                        let dev = Device::Cpu;
                        let layers = layers_of(&config(), &link).unwrap();
                        let params = Parameters::init(&config(), 5, DType::F32, &dev)
                            .unwrap()
                            .stage(layers)
                            .unwrap();
                        let (model, b) = (params.model().unwrap(), batch());
                        let n = b.n_targets();
                        let g = loss_and_grads_of_share(
                            &model, &params, &b, micro_rows, n, None, &link,
                        )
                        .unwrap();
                        let frozen = params.frozen_model().unwrap();
                        let val = evaluate(&frozen, &b, micro_rows, None, &link).unwrap();
                        let whole =
                            gather_on_first_stage(&config(), params.weights(), &link).unwrap();
                        (g.loss, params.names().to_vec(), g.grads, val, whole)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    /// Two and three stages on the 1F1B schedule, with as many micro-batches as stages, more,
    /// and fewer: each stage's gradients are the whole model's for its parameters, every stage
    /// has the whole loss, and the first stage gathers the whole model's weights.
    #[test]
    fn stages_on_the_1f1b_schedule_compute_the_whole_models_loss_and_gradients() {
        let dev = Device::Cpu;
        let whole = Parameters::init(&config(), 5, DType::F32, &dev).unwrap();
        let initial = whole.weights();
        for (stages, micro_rows) in [(2, 1), (2, 2), (3, 1), (3, 2), (3, 5)] {
            let reference =
                loss_and_grads(&whole.model().unwrap(), &whole, &batch(), micro_rows).unwrap();
            let val =
                crate::step::evaluate(&whole.frozen_model().unwrap(), &batch(), 2, None).unwrap();
            let outcomes = run_stages(stages, micro_rows);
            let mut seen = 0;
            for (stage, (loss, names, grads, stage_val, gathered)) in outcomes.iter().enumerate() {
                let what =
                    format!("{stages} stages, {micro_rows} rows per micro-batch, stage {stage}");
                assert!(
                    (loss - reference.loss).abs() <= 1e-6 * reference.loss,
                    "{what}: {loss}"
                );
                assert!(
                    (stage_val - val).abs() <= 1e-5 * val,
                    "{what}: {stage_val} vs {val}"
                );
                for (name, grad) in names.iter().zip(grads) {
                    let i = whole.names().iter().position(|n| n == name).unwrap();
                    let diff = (grad - &reference.grads[i]).unwrap().abs().unwrap();
                    let diff = diff.max_all().unwrap().to_scalar::<f32>().unwrap();
                    assert!(diff < 1e-6, "{what}, {name}: {diff}");
                    seen += 1;
                }
                if stage == 0 {
                    for (name, dims) in tensor_shapes(&config()) {
                        let values = |w: &Weights| {
                            let t = w.get(&name, &dims).unwrap().to_dense(DType::F32).unwrap();
                            t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                        };
                        assert_eq!(values(gathered), values(&initial), "{what}: {name}");
                    }
                }
            }
            assert_eq!(seen, whole.names().len(), "every parameter on one stage");
        }
    }
}

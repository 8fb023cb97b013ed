//! The parts of a split model or sequence, exchanging through their group: herd-model's
//! [`Parts`] over a layout group.
//!
//! - **Tensor parallelism** (Megatron-LM; paper §3.3.1): the ranks of a TP group each hold one
//!   part of every split layer ([`herd_model::split`]: query and KV heads, FFN units and
//!   vocabulary rows divided among them) and complete each other's sums with all-reduces over
//!   the group — two per block forward and two backward, one for the embedding and one for the
//!   output layer's input gradient, plus the vocabulary-parallel loss's few values per position.
//! - **Context parallelism** (paper §3.3.2): the ranks of a CP group each hold 2 of the 2·CP
//!   chunks of every row (rank i chunks i and 2·CP − 1 − i, so causal attention's work is
//!   balanced) and all-gather every layer's keys and values, their gradients reduce-scattered
//!   backward; the mask keeps causality and document boundaries over the gathered keys.
//!
//! The model computes inside candle's ops, which outlive any borrow of an MPI group and may not
//! hold one (an MPI communicator belongs to the thread that made it). So each group is bound to
//! the training thread for the length of a run ([`with_group`]), and [`GroupParts`], the model's
//! view of it, looks it up there: a split layer run outside the binding, or on another thread,
//! is an error, never a wrong sum.

use std::cell::Cell;

use herd_model::split::Parts;

use crate::collectives::Collectives;
use crate::layout::Dim;

/// A pointer to a group bound to this thread, valid while [`with_group`]'s call runs.
type Bound = *const (dyn Collectives + 'static);

thread_local! {
    /// The group bound to this thread for each dimension (indexed as [`Dim::ALL`]).
    static BOUND: [Cell<Option<Bound>>; 4] = const {
        [Cell::new(None), Cell::new(None), Cell::new(None), Cell::new(None)]
    };
}

fn slot(dim: Dim) -> usize {
    Dim::ALL.iter().position(|&d| d == dim).expect("listed")
}

/// Runs `f` with `group` as this thread's group of `dim`: the group every [`GroupParts`] of
/// `dim` exchanges through in `f`.
pub fn with_group<R>(dim: Dim, group: &dyn Collectives, f: impl FnOnce() -> R) -> R {
    /// Puts back the binding `with_group` found, however `f` ends (a panic unwinding too).
    struct Restore(usize, Option<Bound>);
    impl Drop for Restore {
        fn drop(&mut self) {
            BOUND.with(|b| b[self.0].set(self.1));
        }
    }
    let erased: *const (dyn Collectives + '_) = group;
    // SAFETY: only the lifetime is erased. The pointer is reachable only through BOUND on this
    // thread, and `Restore` removes it before `group`'s borrow ends.
    let erased: Bound = unsafe { std::mem::transmute(erased) };
    let i = slot(dim);
    let _restore = Restore(i, BOUND.with(|b| b[i].replace(Some(erased))));
    f()
}

/// Calls `f` on this thread's bound group of `dim`.
pub(crate) fn on_group<R>(
    dim: Dim,
    op: &str,
    f: impl FnOnce(&dyn Collectives) -> crate::Result<R>,
) -> candle_core::Result<R> {
    let Some(bound) = BOUND.with(|b| b[slot(dim)].get()) else {
        candle_core::bail!(
            "{op} outside a run's {} group (with_group binds it to the training thread)",
            dim.key()
        );
    };
    // SAFETY: set by `with_group`, whose caller's borrow of the group is still running (the
    // binding is removed before it ends).
    let group = unsafe { &*bound };
    f(group).map_err(|e| candle_core::Error::Msg(format!("{} group: {e}", dim.key())))
}

/// This rank's part of a model or sequence split over its group of one dimension (`tp` for
/// the layers, `cp` for the sequence).
#[derive(Debug, Clone, Copy)]
pub struct GroupParts {
    dim: Dim,
    parts: usize,
    part: usize,
}

impl GroupParts {
    /// Part `part` of `parts` over the group of `dim` (the group's size and this rank's number
    /// in it).
    pub fn new(dim: Dim, parts: usize, part: usize) -> GroupParts {
        assert!(part < parts, "part {part} of {parts}");
        GroupParts { dim, parts, part }
    }

    fn check(&self, group: &dyn Collectives) -> crate::Result<()> {
        if (group.size(), group.rank()) != (self.parts, self.part) {
            return Err(crate::Error::Layout(format!(
                "the bound group is rank {} of {}, the model part {} of {}",
                group.rank(),
                group.size(),
                self.part,
                self.parts
            )));
        }
        Ok(())
    }
}

impl Parts for GroupParts {
    fn parts(&self) -> usize {
        self.parts
    }

    fn part(&self) -> usize {
        self.part
    }

    fn sum(&self, buf: &mut [f32]) -> candle_core::Result<()> {
        on_group(self.dim, "a sum over the parts", |group| {
            self.check(group)?;
            group.all_reduce_sum(buf)
        })
    }

    fn gather(&self, mine: &[f32], out: &mut [f32]) -> candle_core::Result<()> {
        on_group(self.dim, "a gather of the parts", |group| {
            self.check(group)?;
            group.all_gather(mine, out)
        })
    }

    fn reduce_scatter(&self, whole: &[f32], mine: &mut [f32]) -> candle_core::Result<()> {
        on_group(self.dim, "a reduce-scatter over the parts", |group| {
            self.check(group)?;
            group.reduce_scatter_sum(whole, mine)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier, Mutex};

    use candle_core::{DType, Device};
    use herd_model::split::{part_of, split_dim};
    use herd_model::LlamaConfig;
    use herd_train::loader::Batch;
    use herd_train::params::Parameters;
    use herd_train::step::{loss_and_grads, loss_and_grads_of_share};

    use super::*;
    use crate::collectives::SingleProcess;

    /// Threads of one process as the ranks of a group: each rank leaves its buffer on a shared
    /// table, all wait, each reads what it needs, all wait again. A group to test tensor and
    /// context parallelism with, exactly, without MPI.
    struct Threads {
        rank: usize,
        table: Arc<(Barrier, Mutex<Vec<Vec<f32>>>)>,
    }

    impl Threads {
        fn group(size: usize) -> Vec<Threads> {
            let table = Arc::new((Barrier::new(size), Mutex::new(vec![Vec::new(); size])));
            (0..size)
                .map(|rank| Threads {
                    rank,
                    table: table.clone(),
                })
                .collect()
        }

        /// Every rank's `mine`, in rank order.
        fn exchange(&self, mine: &[f32]) -> Vec<Vec<f32>> {
            let (barrier, table) = &*self.table;
            table.lock().unwrap()[self.rank] = mine.to_vec();
            barrier.wait();
            let all = table.lock().unwrap().clone();
            barrier.wait();
            all
        }
    }

    impl Collectives for Threads {
        fn rank(&self) -> usize {
            self.rank
        }

        fn size(&self) -> usize {
            self.table.1.lock().unwrap().len()
        }

        fn all_reduce_sum(&self, buf: &mut [f32]) -> crate::Result<()> {
            let all = self.exchange(buf);
            for (i, v) in buf.iter_mut().enumerate() {
                *v = all.iter().map(|b| b[i]).sum();
            }
            Ok(())
        }

        fn reduce_scatter_sum(&self, input: &[f32], shard: &mut [f32]) -> crate::Result<()> {
            let all = self.exchange(input);
            let start = self.rank * shard.len();
            for (i, v) in shard.iter_mut().enumerate() {
                *v = all.iter().map(|b| b[start + i]).sum();
            }
            Ok(())
        }

        fn all_gather(&self, shard: &[f32], out: &mut [f32]) -> crate::Result<()> {
            out.copy_from_slice(&self.exchange(shard).concat());
            Ok(())
        }

        fn send(&self, _: usize, _: &[f32], _: u16) -> crate::Result<()> {
            unreachable!("tensor and context parallelism do not send")
        }

        fn receive(&self, _: usize, _: &mut [f32], _: u16) -> crate::Result<()> {
            unreachable!("tensor and context parallelism do not receive")
        }

        fn post_send(&self, _: usize, _: Vec<f32>, _: u16) -> crate::Result<()> {
            unreachable!("tensor and context parallelism do not send")
        }

        fn wait_sends(&self) -> crate::Result<()> {
            Ok(())
        }

        fn barrier(&self) -> crate::Result<()> {
            self.table.0.wait();
            Ok(())
        }
    }

    fn config(tie_embeddings: bool) -> LlamaConfig {
        LlamaConfig {
            vocab_size: 96,
            dim: 32,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 8,
            ffn_dim: 64,
            norm_eps: 1e-5,
            rope_theta: 10_000.0,
            rope_scaling: None,
            max_seq_len: 16,
            tie_embeddings,
        }
    }

    /// Two rows of two documents each (no loss at a document's last token), ids of both halves
    /// of the vocabulary among inputs and targets.
    fn batch() -> Batch {
        let inputs = vec![3, 90, 17, 5, 61, 0, 48, 47, 95, 12, 50, 33, 2, 70, 8, 81];
        let targets = vec![90, 17, 5, 61, 0, 48, 47, 95, 12, 50, 33, 2, 70, 8, 81, 44];
        let one = |zero: usize| (0..8).map(move |i| f32::from(u8::from(i != zero)));
        Batch {
            rows: 2,
            seq_len: 8,
            inputs,
            targets,
            weights: one(2).chain(one(1)).collect(),
            doc_lens: vec![vec![3, 5], vec![2, 6]],
        }
    }

    #[test]
    fn exchanges_outside_the_binding_are_errors() {
        let part = GroupParts::new(Dim::Tensor, 1, 0);
        let err = part.sum(&mut [1.0]).unwrap_err().to_string();
        assert!(err.contains("outside a run's tp group"), "{err}");
        let mut buf = [2.0];
        with_group(Dim::Tensor, &SingleProcess, || part.sum(&mut buf)).unwrap();
        assert_eq!(buf, [2.0]);
        let other = GroupParts::new(Dim::Tensor, 2, 1);
        let err = with_group(Dim::Tensor, &SingleProcess, || other.sum(&mut buf))
            .unwrap_err()
            .to_string();
        assert!(err.contains("rank 0 of 1, the model part 1 of 2"), "{err}");
        let err = with_group(Dim::Context, &SingleProcess, || part.sum(&mut buf))
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside a run's tp group"), "{err}");
        assert!(
            part.sum(&mut buf).is_err(),
            "the binding ends with the call"
        );
    }

    /// What one thread of a `tp` × `cp` layout computes: its loss share, its gradients and
    /// the whole weights gathered from its TP group.
    type Outcome = (f64, Vec<candle_core::Tensor>, herd_model::Weights);

    /// Runs `batch()`'s loss and gradients as `tp` × `cp` threads (TP innermost), each with
    /// its own TP and CP group; returns each thread's outcome in rank order.
    fn run_split(tp: usize, cp: usize, tie: bool) -> Vec<Outcome> {
        let mut tp_groups: Vec<Vec<Threads>> = (0..cp).map(|_| Threads::group(tp)).collect();
        let mut cp_groups: Vec<Vec<Threads>> = (0..tp).map(|_| Threads::group(cp)).collect();
        // Rank c·tp + t holds TP part t of CP part c; take groups from the back.
        let mut ranks = Vec::new();
        for c in (0..cp).rev() {
            for t in (0..tp).rev() {
                let tensor = tp_groups[c].pop().unwrap();
                let context = cp_groups[t].pop().unwrap();
                ranks.push((tensor, context));
            }
        }
        ranks.reverse();
        std::thread::scope(|s| {
            let handles: Vec<_> = ranks
                .into_iter()
                .map(|(tensor, context)| {
                    s.spawn(move || {
                        let dev = Device::Cpu;
                        let parts = |dim, group: &Threads| {
                            let p = GroupParts::new(dim, group.size(), group.rank());
                            (group.size() > 1).then(|| Arc::new(p) as Arc<dyn Parts>)
                        };
                        let layers = parts(Dim::Tensor, &tensor);
                        let sequence = parts(Dim::Context, &context);
                        let params = Parameters::init(&config(tie), 5, DType::F32, &dev)
                            .unwrap()
                            .split_by(layers)
                            .unwrap();
                        with_group(Dim::Tensor, &tensor, || {
                            with_group(Dim::Context, &context, || {
                                let model = params.model().unwrap();
                                let b = batch();
                                let n = b.n_targets();
                                let g = loss_and_grads_of_share(
                                    &model,
                                    &params,
                                    &b,
                                    1,
                                    n,
                                    sequence.as_ref(),
                                )
                                .unwrap();
                                (g.loss, g.grads, params.whole_weights().unwrap())
                            })
                        })
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    /// The loss and every gradient of a model split into TP parts, of rows split into CP
    /// parts, and of both (each rank a thread), equal the whole model's on the whole rows: the
    /// TP parts' gradients are slices of the whole gradient (the norms' whole), the CP parts'
    /// losses and gradients add up to the whole.
    #[test]
    fn split_layers_and_rows_compute_the_whole_models_loss_and_gradients() {
        for (tp, cp, tie) in [(2, 1, false), (2, 1, true), (1, 2, false), (2, 2, true)] {
            let dev = Device::Cpu;
            let whole = Parameters::init(&config(tie), 5, DType::F32, &dev).unwrap();
            let reference = loss_and_grads(&whole.model().unwrap(), &whole, &batch(), 1).unwrap();
            let outcomes = run_split(tp, cp, tie);
            let initial = whole.weights();
            for t in 0..tp {
                // The CP parts of TP part t.
                let mine: Vec<&Outcome> = (0..cp).map(|c| &outcomes[c * tp + t]).collect();
                let loss: f64 = mine.iter().map(|o| o.0).sum();
                let what = format!("tp {tp} × cp {cp}, tie {tie}, part {t}");
                assert!(
                    (loss - reference.loss).abs() <= 1e-6 * reference.loss,
                    "{what}: loss {loss} vs {}",
                    reference.loss
                );
                for (i, name) in whole.names().iter().enumerate() {
                    let mut grad = mine[0].1[i].clone();
                    for other in &mine[1..] {
                        grad = (grad + &other.1[i]).unwrap();
                    }
                    let want = match (tp > 1, split_dim(name)) {
                        (true, Some(dim)) => part_of(&reference.grads[i], dim, tp, t).unwrap(),
                        _ => reference.grads[i].clone(),
                    };
                    let diff = (&grad - &want)
                        .unwrap()
                        .abs()
                        .unwrap()
                        .max_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap();
                    assert!(diff < 1e-6, "{what}, {name}: {diff}");
                    let values = |w: &herd_model::Weights| {
                        let dims = whole.vars()[i].dims();
                        let t = w.get(name, dims).unwrap().to_dense(DType::F32).unwrap();
                        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                    };
                    assert_eq!(
                        values(&initial),
                        values(&mine[0].2),
                        "{what}: {name} gathered"
                    );
                }
            }
        }
        // A loss that ignored the weights would differ: the batch's weights matter.
        let whole = Parameters::init(&config(false), 5, DType::F32, &Device::Cpu).unwrap();
        let unweighted = Batch {
            weights: vec![1.0; 16],
            ..batch()
        };
        let a = loss_and_grads(&whole.model().unwrap(), &whole, &batch(), 1).unwrap();
        let b = loss_and_grads(&whole.model().unwrap(), &whole, &unweighted, 1).unwrap();
        assert!((a.loss - b.loss).abs() > 1e-4);
    }
}

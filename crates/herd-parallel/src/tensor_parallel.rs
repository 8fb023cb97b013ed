//! Tensor parallelism (Megatron-LM; paper §3.3.1): the ranks of a TP group each hold one part of
//! every split layer ([`herd_model::split`]: query and KV heads, FFN units and vocabulary rows
//! divided among them) and complete each other's sums with all-reduces over the group — two per
//! block forward and two backward, one for the embedding and one for the output layer's input
//! gradient, plus the vocabulary-parallel loss's few values per position.
//!
//! The model computes inside candle's ops, which outlive any borrow of an MPI group and may not
//! hold one (an MPI communicator belongs to the thread that made it). So the group is bound to
//! the training thread for the length of a run ([`with_group`]), and [`TensorParallel`], the
//! model's view of it, looks it up there: a split layer run outside the binding, or on another
//! thread, is an error, never a wrong sum.

use std::cell::Cell;

use herd_model::split::SplitLayers;

use crate::collectives::Collectives;

/// A pointer to the group bound to this thread, valid while [`with_group`]'s call runs.
type Bound = *const (dyn Collectives + 'static);

thread_local! {
    static BOUND: Cell<Option<Bound>> = const { Cell::new(None) };
}

/// Runs `f` with `group` as this thread's tensor-parallel group: the group every
/// [`TensorParallel`] exchange in `f` goes through.
pub fn with_group<R>(group: &dyn Collectives, f: impl FnOnce() -> R) -> R {
    /// Puts back the binding `with_group` found, however `f` ends (a panic unwinding too).
    struct Restore(Option<Bound>);
    impl Drop for Restore {
        fn drop(&mut self) {
            BOUND.with(|b| b.set(self.0));
        }
    }
    let erased: *const (dyn Collectives + '_) = group;
    // SAFETY: only the lifetime is erased. The pointer is reachable only through BOUND on this
    // thread, and `Restore` removes it before `group`'s borrow ends.
    let erased: Bound = unsafe { std::mem::transmute(erased) };
    let _restore = Restore(BOUND.with(|b| b.replace(Some(erased))));
    f()
}

/// Calls `f` on this thread's bound group.
fn on_group<R>(
    op: &str,
    f: impl FnOnce(&dyn Collectives) -> crate::Result<R>,
) -> candle_core::Result<R> {
    let Some(bound) = BOUND.with(Cell::get) else {
        candle_core::bail!(
            "tensor parallelism: {op} outside a run's tensor-parallel group (with_group binds \
             it to the training thread)"
        );
    };
    // SAFETY: set by `with_group`, whose caller's borrow of the group is still running (the
    // binding is removed before it ends).
    let group = unsafe { &*bound };
    f(group).map_err(|e| candle_core::Error::Msg(format!("tensor parallelism: {e}")))
}

/// This rank's part of a model whose layers are split over its tensor-parallel group.
#[derive(Debug, Clone, Copy)]
pub struct TensorParallel {
    parts: usize,
    part: usize,
}

impl TensorParallel {
    /// Part `part` of `parts` (the group's size and this rank's number in it).
    pub fn new(parts: usize, part: usize) -> TensorParallel {
        assert!(part < parts, "part {part} of {parts}");
        TensorParallel { parts, part }
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

impl SplitLayers for TensorParallel {
    fn parts(&self) -> usize {
        self.parts
    }

    fn part(&self) -> usize {
        self.part
    }

    fn sum(&self, buf: &mut [f32]) -> candle_core::Result<()> {
        on_group("a sum over the parts", |group| {
            self.check(group)?;
            group.all_reduce_sum(buf)
        })
    }

    fn gather(&self, mine: &[f32], out: &mut [f32]) -> candle_core::Result<()> {
        on_group("a gather of the parts", |group| {
            self.check(group)?;
            group.all_gather(mine, out)
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
    use herd_train::step::loss_and_grads;

    use super::*;
    use crate::collectives::SingleProcess;

    /// Threads of one process as the ranks of a group: each rank leaves its buffer on a shared
    /// table, all wait, each reads what it needs, all wait again. A group to test tensor
    /// parallelism with, exactly, without MPI.
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

        fn reduce_scatter_sum(&self, _: &[f32], _: &mut [f32]) -> crate::Result<()> {
            unreachable!("tensor parallelism does not reduce-scatter")
        }

        fn all_gather(&self, shard: &[f32], out: &mut [f32]) -> crate::Result<()> {
            out.copy_from_slice(&self.exchange(shard).concat());
            Ok(())
        }

        fn send(&self, _: usize, _: &[f32], _: u16) -> crate::Result<()> {
            unreachable!("tensor parallelism does not send")
        }

        fn receive(&self, _: usize, _: &mut [f32], _: u16) -> crate::Result<()> {
            unreachable!("tensor parallelism does not receive")
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

    /// Two rows of two documents each, every id of the vocabulary's two halves among inputs
    /// and targets.
    fn batch() -> Batch {
        let inputs = vec![3, 90, 17, 5, 61, 0, 48, 47, 95, 12, 50, 33];
        let targets = vec![90, 17, 5, 61, 0, 48, 47, 95, 12, 50, 33, 2];
        Batch {
            rows: 2,
            seq_len: 6,
            inputs,
            targets,
            weights: vec![1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0],
            doc_lens: vec![vec![3, 3], vec![2, 4]],
        }
    }

    #[test]
    fn exchanges_outside_the_binding_are_errors() {
        let part = TensorParallel::new(1, 0);
        let err = part.sum(&mut [1.0]).unwrap_err().to_string();
        assert!(
            err.contains("outside a run's tensor-parallel group"),
            "{err}"
        );
        let mut buf = [2.0];
        with_group(&SingleProcess, || part.sum(&mut buf)).unwrap();
        assert_eq!(buf, [2.0]);
        let err = with_group(&SingleProcess, || TensorParallel::new(2, 1).sum(&mut buf))
            .unwrap_err()
            .to_string();
        assert!(err.contains("rank 0 of 1, the model part 1 of 2"), "{err}");
        assert!(
            part.sum(&mut buf).is_err(),
            "the binding ends with the call"
        );
    }

    /// The loss and every gradient of a model split in 2 (each part a thread) equal the whole
    /// model's: the parts' gradients are slices of the whole gradient, the norms' whole.
    #[test]
    fn two_parts_compute_the_whole_models_loss_and_gradients() {
        for tie in [false, true] {
            let dev = Device::Cpu;
            let whole = Parameters::init(&config(tie), 5, DType::F32, &dev).unwrap();
            let reference = loss_and_grads(&whole.model().unwrap(), &whole, &batch(), 1).unwrap();
            let results: Vec<_> = std::thread::scope(|s| {
                let handles: Vec<_> = Threads::group(2)
                    .into_iter()
                    .map(|group| {
                        let dev = dev.clone();
                        s.spawn(move || {
                            let split: Arc<dyn SplitLayers> =
                                Arc::new(TensorParallel::new(2, group.rank));
                            let params = Parameters::init(&config(tie), 5, DType::F32, &dev)
                                .unwrap()
                                .split_by(Some(split))
                                .unwrap();
                            with_group(&group, || {
                                let model = params.model().unwrap();
                                let g = loss_and_grads(&model, &params, &batch(), 1).unwrap();
                                let whole = params.whole_weights().unwrap();
                                (g.loss, g.grads, whole)
                            })
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let initial = whole.weights();
            for (part, (loss, grads, gathered)) in results.iter().enumerate() {
                assert!(
                    (loss - reference.loss).abs() <= 1e-6 * reference.loss,
                    "tie {tie}, part {part}: loss {loss} vs {}",
                    reference.loss
                );
                for (i, name) in whole.names().iter().enumerate() {
                    let want = match split_dim(name) {
                        Some(dim) => part_of(&reference.grads[i], dim, 2, part).unwrap(),
                        None => reference.grads[i].clone(),
                    };
                    let diff = (&grads[i] - &want)
                        .unwrap()
                        .abs()
                        .unwrap()
                        .max_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap();
                    assert!(diff < 1e-6, "tie {tie}, part {part}, {name}: {diff}");
                    let values = |w: &herd_model::Weights| {
                        let dims = whole.vars()[i].dims();
                        let t = w.get(name, dims).unwrap().to_dense(DType::F32).unwrap();
                        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                    };
                    assert_eq!(values(&initial), values(gathered), "{name} gathered");
                }
            }
            // Not the same gradient as a model with a unit loss weight everywhere: the test
            // can tell a loss that ignores the weights.
            let unweighted = Batch {
                weights: vec![1.0; 12],
                ..batch()
            };
            let other = loss_and_grads(&whole.model().unwrap(), &whole, &unweighted, 1).unwrap();
            assert!((other.loss - reference.loss).abs() > 1e-4);
        }
    }
}

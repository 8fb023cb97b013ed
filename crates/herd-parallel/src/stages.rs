//! The ranks of a pipeline (paper §3.3.1), exchanging through their group: herd-train's
//! [`Stages`] over the layout's pipeline group, whose rank `r` holds stage `r` (and `r + pp`, …
//! when interleaved). Hidden states go to the next stage and gradients back as tagged
//! point-to-point messages; sends are posted ([`Collectives::post_send`]) and waited for at the
//! end of the schedule, so a rank waits only to receive. As for [`crate::parts`], the group is
//! bound to the training thread for the run ([`crate::parts::with_group`]).

use herd_train::pipeline::Stages;

use crate::collectives::Collectives;
use crate::layout::Dim;
use crate::parts::on_group;

/// This rank of a pipeline over its bound [`Dim::Pipeline`] group.
#[derive(Debug, Clone, Copy)]
pub struct GroupStages {
    ranks: usize,
    rank: usize,
    stages_per_rank: usize,
}

impl GroupStages {
    /// Rank `rank` of a pipeline of `ranks` (the pipeline group's size and this rank's number
    /// in it), each holding `stages_per_rank` stages.
    pub fn new(ranks: usize, rank: usize, stages_per_rank: usize) -> GroupStages {
        assert!(
            rank < ranks && stages_per_rank > 0,
            "rank {rank} of {ranks}"
        );
        GroupStages {
            ranks,
            rank,
            stages_per_rank,
        }
    }

    fn on_group<R>(
        &self,
        op: &str,
        f: impl FnOnce(&dyn Collectives) -> crate::Result<R>,
    ) -> herd_train::Result<R> {
        let result = on_group(Dim::Pipeline, op, |group| {
            if (group.size(), group.rank()) != (self.ranks, self.rank) {
                return Err(crate::Error::Layout(format!(
                    "the bound group is rank {} of {}, the pipeline's {} of {}",
                    group.rank(),
                    group.size(),
                    self.rank,
                    self.ranks
                )));
            }
            f(group)
        });
        result.map_err(|e| herd_train::Error::Sharing(format!("pipeline parallelism: {e}")))
    }
}

impl Stages for GroupStages {
    fn ranks(&self) -> usize {
        self.ranks
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn stages_per_rank(&self) -> usize {
        self.stages_per_rank
    }

    fn send(&self, to: usize, values: Vec<f32>, tag: u16) -> herd_train::Result<()> {
        self.on_group("a send to a stage", |g| g.post_send(to, values, tag))
    }

    fn receive(&self, from: usize, values: &mut [f32], tag: u16) -> herd_train::Result<()> {
        self.on_group("a receive from a stage", |g| g.receive(from, values, tag))
    }

    fn flush(&self) -> herd_train::Result<()> {
        self.on_group("the end of the sends to the stages", |g| g.wait_sends())
    }

    fn sum(&self, values: &mut [f32]) -> herd_train::Result<()> {
        self.on_group("a sum over the stages", |g| g.all_reduce_sum(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectives::SingleProcess;
    use crate::parts::with_group;

    #[test]
    fn stages_exchange_only_through_their_bound_group() {
        let stage = GroupStages::new(1, 0, 1);
        let err = stage.sum(&mut [1.0]).unwrap_err().to_string();
        assert!(err.contains("outside a run's pp group"), "{err}");
        let mut values = [2.0];
        with_group(Dim::Pipeline, &SingleProcess, || stage.sum(&mut values)).unwrap();
        assert_eq!(values, [2.0]);
        let other = GroupStages::new(2, 1, 1);
        let err = with_group(Dim::Pipeline, &SingleProcess, || {
            other.send(0, vec![1.0], 0)
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("the pipeline's 1 of 2"), "{err}");
    }
}

//! The stages of a pipeline (paper §3.3.1), exchanging through their group: herd-train's
//! [`Stages`] over the layout's pipeline group, whose rank `s` holds stage `s`. Activations go to
//! the next stage and gradients back with point-to-point messages; a stage that sends to a
//! neighbour and then receives from it does both at once ([`Collectives::send_receive`]), so
//! the 1F1B schedule never waits on itself. As for [`crate::parts`], the group is bound to the
//! training thread for the run ([`crate::parts::with_group`]).

use herd_train::pipeline::Stages;

use crate::collectives::Collectives;
use crate::layout::Dim;
use crate::parts::on_group;

/// The tag of every message between stages (each pair's messages arrive in order).
const STAGE_TAG: u16 = 3;

/// This rank's stage of a pipeline over its bound [`Dim::Pipeline`] group.
#[derive(Debug, Clone, Copy)]
pub struct GroupStages {
    stages: usize,
    stage: usize,
}

impl GroupStages {
    /// Stage `stage` of `stages` (the pipeline group's size and this rank's number in it).
    pub fn new(stages: usize, stage: usize) -> GroupStages {
        assert!(stage < stages, "stage {stage} of {stages}");
        GroupStages { stages, stage }
    }

    fn on_group<R>(
        &self,
        op: &str,
        f: impl FnOnce(&dyn Collectives) -> crate::Result<R>,
    ) -> herd_train::Result<R> {
        let result = on_group(Dim::Pipeline, op, |group| {
            if (group.size(), group.rank()) != (self.stages, self.stage) {
                return Err(crate::Error::Layout(format!(
                    "the bound group is rank {} of {}, the stage {} of {}",
                    group.rank(),
                    group.size(),
                    self.stage,
                    self.stages
                )));
            }
            f(group)
        });
        result.map_err(|e| herd_train::Error::Sharing(format!("pipeline parallelism: {e}")))
    }
}

impl Stages for GroupStages {
    fn stages(&self) -> usize {
        self.stages
    }

    fn stage(&self) -> usize {
        self.stage
    }

    fn send(&self, to: usize, values: &[f32]) -> herd_train::Result<()> {
        self.on_group("a send to a stage", |g| g.send(to, values, STAGE_TAG))
    }

    fn receive(&self, from: usize, values: &mut [f32]) -> herd_train::Result<()> {
        self.on_group("a receive from a stage", |g| {
            g.receive(from, values, STAGE_TAG)
        })
    }

    fn exchange(&self, peer: usize, values: &[f32], into: &mut [f32]) -> herd_train::Result<()> {
        self.on_group("an exchange with a stage", |g| {
            g.send_receive(peer, values, into, STAGE_TAG)
        })
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
        let stage = GroupStages::new(1, 0);
        let err = stage.sum(&mut [1.0]).unwrap_err().to_string();
        assert!(err.contains("outside a run's pp group"), "{err}");
        let mut values = [2.0];
        with_group(Dim::Pipeline, &SingleProcess, || stage.sum(&mut values)).unwrap();
        assert_eq!(values, [2.0]);
        let other = GroupStages::new(2, 1);
        let err = with_group(Dim::Pipeline, &SingleProcess, || other.send(0, &values))
            .unwrap_err()
            .to_string();
        assert!(err.contains("the stage 1 of 2"), "{err}");
    }
}

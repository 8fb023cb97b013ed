//! [`Collectives`] over MPI (rsmpi on the system's Open MPI): the world of an `mpirun` job and
//! the layout's groups split from it. One process, one rank; `mpirun -n N herd …` starts N.
//!
//! MPI's errors are fatal by default (the job aborts with MPI's message), so what can be checked
//! before a call — lengths, peers — is checked here and returned as an error instead.

use std::marker::PhantomData;

use ::mpi::collective::SystemOperation;
use ::mpi::environment::Universe;
use ::mpi::topology::{Color, SimpleCommunicator};
use ::mpi::traits::*;

use crate::collectives::{check_lengths, Collectives};
use crate::error::{Error, Result};
use crate::layout::{Dim, Layout};

/// The MPI environment of this process: initialised by [`MpiWorld::init`], finalised when
/// dropped (after every group made from it, which borrow it).
pub struct MpiWorld {
    universe: Universe,
}

impl MpiWorld {
    /// Initialises MPI. A process initialises it once: a second call is an error.
    pub fn init() -> Result<MpiWorld> {
        let universe = ::mpi::initialize().ok_or_else(|| Error::Collective {
            op: "init",
            message: "MPI was already initialised in this process".into(),
        })?;
        Ok(MpiWorld { universe })
    }

    /// Every rank of the job.
    pub fn world(&self) -> MpiGroup<'_> {
        MpiGroup {
            comm: self.universe.world(),
            _universe: PhantomData,
        }
    }
}

/// A group of ranks with its own MPI communicator; ranks are numbered within it.
pub struct MpiGroup<'u> {
    comm: SimpleCommunicator,
    _universe: PhantomData<&'u Universe>,
}

impl<'u> MpiGroup<'u> {
    /// This rank's group in `dim` of `layout`, whose ranks are this group's. Every rank of this
    /// group calls it together (it is a collective); the new group numbers its ranks by their
    /// coordinate in `dim`, as [`Layout::group`] lists them.
    pub fn split(&self, layout: &Layout, dim: Dim) -> Result<MpiGroup<'u>> {
        if layout.world_size() != self.size() {
            return Err(Error::Layout(format!(
                "the layout has {} ranks, the group {}",
                layout.world_size(),
                self.size()
            )));
        }
        let rank = self.rank();
        let members = layout.group(rank, dim);
        let key = members.iter().position(|&r| r == rank).expect("a member");
        let color = Color::with_value(layout.group_id(rank, dim) as i32);
        let comm = self
            .comm
            .split_by_color_with_key(color, key as i32)
            .expect("every rank gives a colour, so every rank gets a group");
        Ok(MpiGroup {
            comm,
            _universe: PhantomData,
        })
    }

    fn peer(&self, op: &'static str, peer: usize) -> Result<i32> {
        if peer >= self.size() {
            return Err(Error::Collective {
                op,
                message: format!("rank {peer} is not in a group of {}", self.size()),
            });
        }
        Ok(peer as i32)
    }
}

impl Collectives for MpiGroup<'_> {
    fn rank(&self) -> usize {
        self.comm.rank() as usize
    }

    fn size(&self) -> usize {
        self.comm.size() as usize
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        // rsmpi has no MPI_IN_PLACE: the sum is written over a copy of the input.
        let input = buf.to_vec();
        self.comm
            .all_reduce_into(&input[..], buf, SystemOperation::sum());
        Ok(())
    }

    fn reduce_scatter_sum(&self, input: &[f32], shard: &mut [f32]) -> Result<()> {
        check_lengths("reduce_scatter_sum", input.len(), shard.len(), self.size())?;
        self.comm
            .reduce_scatter_block_into(input, shard, SystemOperation::sum());
        Ok(())
    }

    fn all_gather(&self, shard: &[f32], out: &mut [f32]) -> Result<()> {
        check_lengths("all_gather", out.len(), shard.len(), self.size())?;
        self.comm.all_gather_into(shard, out);
        Ok(())
    }

    fn send(&self, to: usize, buf: &[f32], tag: u16) -> Result<()> {
        let to = self.peer("send", to)?;
        self.comm
            .process_at_rank(to)
            .send_with_tag(buf, i32::from(tag));
        Ok(())
    }

    fn receive(&self, from: usize, buf: &mut [f32], tag: u16) -> Result<()> {
        let from = self.peer("receive", from)?;
        let status = self
            .comm
            .process_at_rank(from)
            .receive_into_with_tag(buf, i32::from(tag));
        let got = status.count(f32::equivalent_datatype()) as usize;
        if got != buf.len() {
            return Err(Error::Collective {
                op: "receive",
                message: format!(
                    "rank {from} sent {got} values with tag {tag}, {} were expected",
                    buf.len()
                ),
            });
        }
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.comm.barrier();
        Ok(())
    }
}

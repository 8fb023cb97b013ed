//! The collectives of a group of ranks, on f32 buffers (gradients are reduced in f32, paper
//! §3.3.4): all-reduce, reduce-scatter, all-gather, send and receive, barrier — what data,
//! tensor, pipeline and context parallelism need and nothing more (NCCL's set, torch.distributed's
//! names). A group is the world or one of the [`crate::Layout`]'s groups; ranks are numbered
//! within it.

use crate::error::{Error, Result};

/// Collective operations among the ranks of one group. Every rank of the group calls the same
/// collectives in the same order with buffers of the same lengths; lengths are checked before
/// anything is sent, so a mismatch is an error on the rank that made it.
pub trait Collectives {
    /// This rank's number in the group, `0..size()`.
    fn rank(&self) -> usize;

    /// Ranks in the group.
    fn size(&self) -> usize;

    /// Replaces `buf` by its element-wise sum over the group's ranks.
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()>;

    /// Sums `input` over the ranks and gives this rank its part: `input` is `size()` equal
    /// parts, `shard` (one part long) gets part `rank()` of the sum. ZeRO's gradient reduction.
    fn reduce_scatter_sum(&self, input: &[f32], shard: &mut [f32]) -> Result<()>;

    /// Concatenates every rank's `shard` in rank order into `out` (`size()` parts).
    fn all_gather(&self, shard: &[f32], out: &mut [f32]) -> Result<()>;

    /// Sends `buf` to rank `to`; the receiver calls [`Collectives::receive`] with the same
    /// `tag` and length.
    fn send(&self, to: usize, buf: &[f32], tag: u16) -> Result<()>;

    /// Receives into `buf` what rank `from` sent with `tag`.
    fn receive(&self, from: usize, buf: &mut [f32], tag: u16) -> Result<()>;

    /// Starts sending `buf` to rank `to` with `tag` and returns: the send completes by the next
    /// [`Collectives::wait_sends`]. A rank that posts its sends before it waits to receive never
    /// waits on a peer that does the same (pipeline stages passing hidden states one way and
    /// gradients the other).
    fn post_send(&self, to: usize, buf: Vec<f32>, tag: u16) -> Result<()>;

    /// Returns once every send this rank posted has completed.
    fn wait_sends(&self) -> Result<()>;

    /// Returns once every rank of the group has called it.
    fn barrier(&self) -> Result<()>;
}

/// Checks the buffers of a reduce-scatter (`input` = `parts` × `shard`) or an all-gather
/// (`out` = `parts` × `shard`): the one rule both implementations enforce before they move data.
pub fn check_lengths(op: &'static str, whole: usize, shard: usize, parts: usize) -> Result<()> {
    if whole != shard * parts {
        return Err(Error::Collective {
            op,
            message: format!(
                "the whole buffer holds {whole} values, but {parts} ranks × {shard} per rank \
                 make {}",
                shard * parts
            ),
        });
    }
    Ok(())
}

/// A group of one rank: every collective is the identity (a sum over one rank is itself), and
/// there is no peer to send to. What a run without MPI uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl SingleProcess {
    fn no_peer(op: &'static str, peer: usize) -> Error {
        Error::Collective {
            op,
            message: format!("rank {peer} does not exist in a group of one process"),
        }
    }
}

impl Collectives for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn all_reduce_sum(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }

    fn reduce_scatter_sum(&self, input: &[f32], shard: &mut [f32]) -> Result<()> {
        check_lengths("reduce_scatter_sum", input.len(), shard.len(), 1)?;
        shard.copy_from_slice(input);
        Ok(())
    }

    fn all_gather(&self, shard: &[f32], out: &mut [f32]) -> Result<()> {
        check_lengths("all_gather", out.len(), shard.len(), 1)?;
        out.copy_from_slice(shard);
        Ok(())
    }

    fn send(&self, to: usize, _buf: &[f32], _tag: u16) -> Result<()> {
        Err(Self::no_peer("send", to))
    }

    fn receive(&self, from: usize, _buf: &mut [f32], _tag: u16) -> Result<()> {
        Err(Self::no_peer("receive", from))
    }

    fn post_send(&self, to: usize, _buf: Vec<f32>, _tag: u16) -> Result<()> {
        Err(Self::no_peer("post_send", to))
    }

    fn wait_sends(&self) -> Result<()> {
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// Checks `group`'s collectives against sums worked out by hand: every rank contributes values
/// that depend on its rank, so each result is known in closed form (and exact in f32: small
/// integers). Returns the first disagreement. The MPI test runs it on the world and on each
/// layout group; the unit test on [`SingleProcess`].
pub fn self_check(group: &dyn Collectives) -> std::result::Result<(), String> {
    let (rank, size) = (group.rank(), group.size());
    let value = |r: usize, i: usize| (r * 100 + i) as f32;
    let n = 7;
    let mut buf: Vec<f32> = (0..n).map(|i| value(rank, i)).collect();
    group.all_reduce_sum(&mut buf).map_err(|e| e.to_string())?;
    let want: Vec<f32> = (0..n)
        .map(|i| (0..size).map(|r| value(r, i)).sum())
        .collect();
    if buf != want {
        return Err(format!("all_reduce_sum gave {buf:?}, want {want:?}"));
    }
    let shard_len = 3;
    let input: Vec<f32> = (0..shard_len * size).map(|i| value(rank, i)).collect();
    let mut shard = vec![0.0; shard_len];
    group
        .reduce_scatter_sum(&input, &mut shard)
        .map_err(|e| e.to_string())?;
    let want: Vec<f32> = (0..shard_len)
        .map(|i| (0..size).map(|r| value(r, rank * shard_len + i)).sum())
        .collect();
    if shard != want {
        return Err(format!("reduce_scatter_sum gave {shard:?}, want {want:?}"));
    }
    let mine: Vec<f32> = (0..shard_len).map(|i| value(rank, i)).collect();
    let mut all = vec![0.0; shard_len * size];
    group
        .all_gather(&mine, &mut all)
        .map_err(|e| e.to_string())?;
    let want: Vec<f32> = (0..size)
        .flat_map(|r| (0..shard_len).map(move |i| value(r, i)))
        .collect();
    if all != want {
        return Err(format!("all_gather gave {all:?}, want {want:?}"));
    }
    if size > 1 {
        // A ring: each rank sends its values to the next and receives the previous rank's.
        let (next, prev) = ((rank + 1) % size, (rank + size - 1) % size);
        let mut got = vec![0.0; shard_len];
        if rank % 2 == 0 {
            group.send(next, &mine, 7).map_err(|e| e.to_string())?;
            group
                .receive(prev, &mut got, 7)
                .map_err(|e| e.to_string())?;
        } else {
            group
                .receive(prev, &mut got, 7)
                .map_err(|e| e.to_string())?;
            group.send(next, &mine, 7).map_err(|e| e.to_string())?;
        }
        let want: Vec<f32> = (0..shard_len).map(|i| value(prev, i)).collect();
        if got != want {
            return Err(format!("receive from {prev} gave {got:?}, want {want:?}"));
        }
        // Pairs (0, 1), (2, 3), …: each posts a send of more than any eager limit to the other,
        // then receives theirs — which only posted sends allow.
        let partner = rank ^ 1;
        if partner < size {
            let long = |r: usize| {
                (0..1 << 18)
                    .map(move |i| value(r, i % 1000))
                    .collect::<Vec<_>>()
            };
            group
                .post_send(partner, long(rank), 8)
                .map_err(|e| e.to_string())?;
            let mut got = vec![0.0; 1 << 18];
            group
                .receive(partner, &mut got, 8)
                .map_err(|e| e.to_string())?;
            group.wait_sends().map_err(|e| e.to_string())?;
            if got != long(partner) {
                return Err(format!("a posted send from {partner} arrived changed"));
            }
        }
    }
    group.barrier().map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_process_is_a_group_of_one() {
        self_check(&SingleProcess).unwrap();
        let err = SingleProcess.send(1, &[1.0], 0).unwrap_err().to_string();
        assert!(err.contains("rank 1"), "{err}");
    }

    #[test]
    fn mismatched_buffers_are_refused_before_anything_moves() {
        let mut shard = [0.0; 2];
        let err = SingleProcess
            .reduce_scatter_sum(&[1.0, 2.0, 3.0], &mut shard)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("reduce_scatter_sum") && err.contains("3 values"),
            "{err}"
        );
        assert_eq!(shard, [0.0; 2]);
        let err = check_lengths("all_gather", 8, 3, 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 ranks × 3 per rank make 6"), "{err}");
    }
}

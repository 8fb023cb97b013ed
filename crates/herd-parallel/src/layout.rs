//! The paper's 4D layout (§3.3.1, figure 5): ranks ordered [TP, CP, PP, DP] — tensor parallelism
//! innermost, where bandwidth is highest (within a node), data parallelism outermost, where
//! latency is tolerated. A rank's number is
//! `((dp · PP + pp) · CP + cp) · TP + tp`, so consecutive ranks differ in TP first.
//!
//! Each dimension cuts the world into groups: the ranks that agree on every other coordinate.
//! TP's groups all-reduce activations, CP's all-gather keys and values, PP's pass activations
//! from stage to stage, DP's reduce gradients.

use crate::error::{Error, Result};

/// One of the four dimensions, innermost first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dim {
    /// Tensor parallelism: weights split within a layer.
    Tensor,
    /// Context parallelism: each sequence split along its length.
    Context,
    /// Pipeline parallelism: layers split into stages.
    Pipeline,
    /// Data parallelism: the batch split, weights and optimizer state sharded.
    Data,
}

impl Dim {
    /// The four, in rank order (innermost first).
    pub const ALL: [Dim; 4] = [Dim::Tensor, Dim::Context, Dim::Pipeline, Dim::Data];

    /// The recipe's key for the dimension's degree.
    pub fn key(self) -> &'static str {
        match self {
            Dim::Tensor => "tp",
            Dim::Context => "cp",
            Dim::Pipeline => "pp",
            Dim::Data => "dp",
        }
    }

    fn index(self) -> usize {
        Dim::ALL.iter().position(|&d| d == self).expect("listed")
    }
}

/// A rank's coordinate in each dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Coords {
    /// Index within its tensor-parallel group.
    pub tp: usize,
    /// Index within its context-parallel group.
    pub cp: usize,
    /// Pipeline stage.
    pub pp: usize,
    /// Data-parallel replica.
    pub dp: usize,
}

impl Coords {
    fn get(&self, dim: Dim) -> usize {
        [self.tp, self.cp, self.pp, self.dp][dim.index()]
    }

    fn set(&mut self, dim: Dim, value: usize) {
        *[&mut self.tp, &mut self.cp, &mut self.pp, &mut self.dp][dim.index()] = value;
    }
}

/// The degrees of the four dimensions; their product is the world size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    degrees: [usize; 4],
    /// Pipeline stages per PP rank (interleaved virtual stages; 1 without).
    virtual_stages: usize,
}

impl Layout {
    /// The layout of degrees `tp`, `cp`, `pp`, `dp` over `world` ranks: each at least 1, their
    /// product the world size.
    pub fn new(tp: usize, cp: usize, pp: usize, dp: usize, world: usize) -> Result<Layout> {
        let degrees = [tp, cp, pp, dp];
        if let Some(dim) = Dim::ALL.iter().find(|d| degrees[d.index()] == 0) {
            return Err(Error::Layout(format!(
                "{} = 0: every degree is at least 1",
                dim.key()
            )));
        }
        let product: usize = degrees.iter().product();
        if product != world {
            return Err(Error::Layout(format!(
                "tp {tp} × cp {cp} × pp {pp} × dp {dp} = {product} ranks, but the job has \
                 {world}: launch {product} processes or change the degrees"
            )));
        }
        Ok(Layout {
            degrees,
            virtual_stages: 1,
        })
    }

    /// The same layout with `virtual_stages` pipeline stages on each PP rank (an interleaved
    /// pipeline; at least 1, and above 1 only with pp above 1).
    pub fn with_virtual_stages(self, virtual_stages: usize) -> Result<Layout> {
        if virtual_stages == 0 || (virtual_stages > 1 && self.degree(Dim::Pipeline) == 1) {
            return Err(Error::Layout(format!(
                "virtual_stages = {virtual_stages}: at least 1, and above 1 only with pp above 1"
            )));
        }
        Ok(Layout {
            virtual_stages,
            ..self
        })
    }

    /// Pipeline stages per PP rank.
    pub fn virtual_stages(&self) -> usize {
        self.virtual_stages
    }

    /// The degree of `dim`.
    pub fn degree(&self, dim: Dim) -> usize {
        self.degrees[dim.index()]
    }

    /// Ranks in all.
    pub fn world_size(&self) -> usize {
        self.degrees.iter().product()
    }

    /// `rank`'s coordinates.
    pub fn coords(&self, rank: usize) -> Coords {
        assert!(rank < self.world_size(), "rank {rank} outside the layout");
        let mut coords = Coords {
            tp: 0,
            cp: 0,
            pp: 0,
            dp: 0,
        };
        let mut rest = rank;
        for dim in Dim::ALL {
            coords.set(dim, rest % self.degree(dim));
            rest /= self.degree(dim);
        }
        coords
    }

    /// The rank at `coords`.
    pub fn rank(&self, coords: Coords) -> usize {
        Dim::ALL.iter().rev().fold(0, |rank, &dim| {
            let c = coords.get(dim);
            assert!(c < self.degree(dim), "{} {c} outside the layout", dim.key());
            rank * self.degree(dim) + c
        })
    }

    /// The ranks of `rank`'s group in `dim` (those that agree with it on the other three
    /// coordinates), ordered by their coordinate in `dim`: entry i is the group's rank i.
    pub fn group(&self, rank: usize, dim: Dim) -> Vec<usize> {
        self.group_over(rank, &[dim])
    }

    /// The ranks of `rank`'s group over several dimensions (those that agree with it on every
    /// other coordinate), in rank order — the inner dimension's coordinate varies fastest.
    pub fn group_over(&self, rank: usize, dims: &[Dim]) -> Vec<usize> {
        let base = self.coords(rank);
        (0..self.world_size())
            .filter(|&r| {
                let c = self.coords(r);
                Dim::ALL
                    .iter()
                    .all(|d| dims.contains(d) || c.get(*d) == base.get(*d))
            })
            .collect()
    }

    /// A number that `rank`'s group in `dim` shares with no other group of `dim`: the group's
    /// lowest rank (what an MPI communicator split takes as its colour).
    pub fn group_id(&self, rank: usize, dim: Dim) -> usize {
        self.group_id_over(rank, &[dim])
    }

    /// [`Layout::group_id`] of the group over `dims`.
    pub fn group_id_over(&self, rank: usize, dims: &[Dim]) -> usize {
        let mut c = self.coords(rank);
        for &dim in dims {
            c.set(dim, 0);
        }
        self.rank(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_are_ordered_tp_cp_pp_dp() {
        let layout = Layout::new(2, 1, 2, 2, 8).unwrap();
        let c = layout.coords(5);
        assert_eq!((c.tp, c.cp, c.pp, c.dp), (1, 0, 0, 1));
        for rank in 0..8 {
            assert_eq!(layout.rank(layout.coords(rank)), rank);
        }
        assert_eq!(layout.group(5, Dim::Tensor), vec![4, 5]);
        assert_eq!(layout.group(5, Dim::Pipeline), vec![5, 7]);
        assert_eq!(layout.group(5, Dim::Data), vec![1, 5]);
        assert_eq!(layout.group(5, Dim::Context), vec![5]);
        assert_eq!(layout.group_id(5, Dim::Data), 1);
        let layout = Layout::new(2, 2, 1, 2, 8).unwrap();
        // Rank 5 is tp 1, cp 0, dp 1: its CP × DP group holds the tp 1 ranks, cp innermost.
        assert_eq!(
            layout.group_over(5, &[Dim::Context, Dim::Data]),
            vec![1, 3, 5, 7]
        );
        assert_eq!(layout.group_id_over(5, &[Dim::Context, Dim::Data]), 1);
    }

    #[test]
    fn each_dimension_partitions_the_world() {
        let layout = Layout::new(2, 2, 3, 2, 24).unwrap();
        for dim in Dim::ALL {
            for rank in 0..24 {
                let group = layout.group(rank, dim);
                assert!(group.contains(&rank));
                assert_eq!(layout.group_id(rank, dim), group[0]);
            }
            let mut groups: Vec<Vec<usize>> = (0..24).map(|r| layout.group(r, dim)).collect();
            groups.sort();
            groups.dedup();
            assert_eq!(groups.len(), 24 / layout.degree(dim), "{dim:?}");
            let mut members = groups.concat();
            members.sort();
            assert_eq!(members, (0..24).collect::<Vec<_>>(), "{dim:?}");
        }
    }

    #[test]
    fn degrees_must_fill_the_world() {
        let err = Layout::new(2, 1, 2, 1, 8).unwrap_err().to_string();
        assert!(err.contains("= 4 ranks, but the job has 8"), "{err}");
        let err = Layout::new(2, 0, 2, 1, 4).unwrap_err().to_string();
        assert!(err.contains("cp = 0"), "{err}");
    }
}

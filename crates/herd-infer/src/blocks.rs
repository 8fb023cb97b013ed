//! The engine's block manager: which blocks of the paged KV cache ([`herd_model::paged`]) are
//! free, how many sequences hold each, and which full prompt blocks are kept for reuse
//! (vLLM's automatic prefix caching). A full block of a prompt is named by a hash of its tokens
//! chained with the hash of the block before it, so a block is reused only behind the same
//! prefix. A block no sequence holds stays cached until the pool needs it: blocks that were
//! never named are handed out first, then named ones, least recently freed first.

use std::collections::{HashMap, VecDeque};

use herd_model::paged::BLOCK_TOKENS;

/// The name of a full block of prompt tokens: XXH3-128 over the previous block's name and
/// this block's ids.
pub type BlockHash = u128;

/// Free lists, reference counts and the prefix cache of one block pool.
#[derive(Debug)]
pub struct BlockManager {
    /// Sequences holding each block.
    refs: Vec<u32>,
    /// The name each block was registered under, if any.
    names: Vec<Option<BlockHash>>,
    /// Blocks no sequence holds: unnamed ones at the front, named ones behind in the order
    /// they were freed.
    free: VecDeque<u32>,
    /// Named blocks by name.
    cached: HashMap<BlockHash, u32>,
}

impl BlockManager {
    /// A manager of `blocks` blocks, all free.
    pub fn new(blocks: usize) -> BlockManager {
        BlockManager {
            refs: vec![0; blocks],
            names: vec![None; blocks],
            free: (0..blocks as u32).collect(),
            cached: HashMap::new(),
        }
    }

    /// Blocks held by at least one sequence.
    pub fn used(&self) -> usize {
        self.refs.len() - self.free.len()
    }

    /// Blocks in the pool.
    pub fn total(&self) -> usize {
        self.refs.len()
    }

    /// Sequences holding `block`.
    pub fn holders(&self, block: u32) -> u32 {
        self.refs[block as usize]
    }

    /// Takes a free block for one sequence (forgetting what it cached), or `None` when every
    /// block is held.
    pub fn allocate(&mut self) -> Option<u32> {
        let block = self.free.pop_front()?;
        if let Some(name) = self.names[block as usize].take() {
            self.cached.remove(&name);
        }
        self.refs[block as usize] = 1;
        Some(block)
    }

    /// One more sequence holds `block` (a shared prefix, or a forked sequence).
    pub fn share(&mut self, block: u32) {
        if self.refs[block as usize] == 0 {
            let at = self.free.iter().position(|&b| b == block);
            self.free
                .remove(at.expect("an unheld block is on the free list"));
        }
        self.refs[block as usize] += 1;
    }

    /// A sequence lets `block` go; when none holds it any more it is free, and stays cached
    /// under its name (if it has one) until it is handed out again.
    pub fn release(&mut self, block: u32) {
        let refs = &mut self.refs[block as usize];
        debug_assert!(*refs > 0, "block {block} released more often than held");
        *refs = refs.saturating_sub(1);
        if *refs == 0 {
            if self.names[block as usize].is_some() {
                self.free.push_back(block);
            } else {
                self.free.push_front(block);
            }
        }
    }

    /// Names the full prompt block `block` `name`, so later prompts with the same prefix can
    /// share it (unless another block already goes by that name).
    pub fn register(&mut self, block: u32, name: BlockHash) {
        if self.names[block as usize].is_none() && !self.cached.contains_key(&name) {
            self.cached.insert(name, block);
            self.names[block as usize] = Some(name);
        }
    }

    /// The cached block named `name`, if any.
    pub fn lookup(&self, name: BlockHash) -> Option<u32> {
        self.cached.get(&name).copied()
    }
}

/// The names of `prompt`'s full blocks, each chained to the one before.
pub fn block_names(prompt: &[u32]) -> Vec<BlockHash> {
    let mut previous: BlockHash = 0;
    prompt
        .chunks_exact(BLOCK_TOKENS)
        .map(|ids| {
            let mut bytes = Vec::with_capacity(16 + 4 * BLOCK_TOKENS);
            bytes.extend_from_slice(&previous.to_le_bytes());
            ids.iter()
                .for_each(|id| bytes.extend_from_slice(&id.to_le_bytes()));
            previous = xxhash_rust::xxh3::xxh3_128(&bytes);
            previous
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_shared_released_and_reused_by_name() {
        let mut m = BlockManager::new(3);
        let a = m.allocate().unwrap();
        let b = m.allocate().unwrap();
        m.register(a, 7);
        m.share(a);
        assert_eq!((m.used(), m.holders(a)), (2, 2));
        m.release(a);
        m.release(a);
        m.release(b);
        assert_eq!(m.used(), 0);
        // The unnamed block goes first, then the never-used one; the named one stays cached.
        assert_eq!(m.allocate(), Some(b));
        assert_eq!(m.lookup(7), Some(a));
        m.share(a);
        assert_eq!(m.holders(a), 1);
        m.release(a);
        let c = m.allocate().unwrap();
        assert_ne!(c, a);
        // The last free block is the named one: handing it out forgets its name.
        assert_eq!(m.allocate(), Some(a));
        assert_eq!(m.lookup(7), None);
        assert_eq!(m.allocate(), None);
    }

    #[test]
    fn names_chain_through_the_prefix() {
        let p: Vec<u32> = (0..40).collect();
        let mut q = p.clone();
        q[3] = 99;
        let (a, b) = (block_names(&p), block_names(&q));
        assert_eq!(a.len(), 2);
        assert_ne!(a[0], b[0]);
        // Same second block's ids behind a different first block: a different name.
        assert_ne!(a[1], b[1]);
        assert_eq!(block_names(&p[..35]), a);
    }
}

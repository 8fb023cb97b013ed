//! Where the tokens of a forward pass sit: their RoPE positions and which document each belongs
//! to. Packing, the KV cache and the inter-document mask of the paper (§3.2) are arguments of the
//! forward pass described here, not modes of the model.

use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor};

use crate::split::Parts;

/// Positions and attention structure of a `[batch, seq_len]` block of tokens.
#[derive(Debug, Clone)]
pub struct SequenceLayout {
    batch: usize,
    seq_len: usize,
    /// Tokens already in the KV cache before this block (same for every row).
    cached: usize,
    /// RoPE position of every token, row-major `[batch, seq_len]`.
    positions: Vec<u32>,
    /// Document id of every token when rows are packed from several documents.
    documents: Option<Vec<u32>>,
    /// When the block is one part of longer rows (context parallelism): the keys every query
    /// attends over, gathered from all parts.
    keys: Option<PartKeys>,
}

/// The keys of a block that is one part of its rows: every part's tokens in part order, as
/// [`crate::split::gather_sequence`] gathers their keys and values.
#[derive(Debug, Clone)]
struct PartKeys {
    /// Keys per row.
    len: usize,
    /// RoPE position of every key, row-major `[batch, len]`.
    positions: Vec<u32>,
    /// Document id of every key, when rows are packed.
    documents: Option<Vec<u32>>,
    /// The exchange between the parts.
    parts: Arc<dyn Parts>,
}

/// The columns of a row of `seq_len` tokens that part `part` of `parts` holds under context
/// parallelism (paper §3.3.2): the row cut into 2·parts chunks, the part holding chunks `part`
/// and 2·parts − 1 − `part`, so every part has as many early (cheap) as late (expensive) causal
/// queries.
pub fn context_columns(
    seq_len: usize,
    parts: usize,
    part: usize,
) -> std::result::Result<Vec<usize>, String> {
    if parts == 0 || part >= parts || !seq_len.is_multiple_of(2 * parts) {
        return Err(format!(
            "a row of {seq_len} tokens does not split into 2 × {parts} equal chunks (part \
             {part}): make seq_len a multiple of 2·cp"
        ));
    }
    let chunk = seq_len / (2 * parts);
    let (early, late) = (part * chunk, (2 * parts - 1 - part) * chunk);
    Ok((early..early + chunk).chain(late..late + chunk).collect())
}

impl SequenceLayout {
    /// A causal block of `seq_len` tokens per row following `cached` tokens already in the cache,
    /// at positions `cached..cached + seq_len`.
    pub fn causal(batch: usize, seq_len: usize, cached: usize) -> SequenceLayout {
        let row: Vec<u32> = (cached..cached + seq_len).map(|p| p as u32).collect();
        SequenceLayout {
            batch,
            seq_len,
            cached,
            positions: row.repeat(batch),
            documents: None,
            keys: None,
        }
    }

    /// A causal block with explicit positions (one row), e.g. to place a sequence deep into the
    /// context.
    pub fn with_positions(positions: Vec<u32>, cached: usize) -> SequenceLayout {
        SequenceLayout {
            batch: 1,
            seq_len: positions.len(),
            cached,
            positions,
            documents: None,
            keys: None,
        }
    }

    /// The same block with each token tagged by document: no token attends across documents.
    pub fn with_documents(
        mut self,
        documents: Vec<u32>,
    ) -> std::result::Result<SequenceLayout, String> {
        if documents.len() != self.positions.len() || self.cached != 0 {
            return Err(format!(
                "{} document ids for {} tokens ({} cached): documents need one id per token and no cache",
                documents.len(),
                self.positions.len(),
                self.cached
            ));
        }
        self.documents = Some(documents);
        Ok(self)
    }

    /// Rows packed from several documents (lengths per row, each row summing to the same
    /// length): positions restart at 0 in each document and no token attends across a
    /// document boundary.
    pub fn packed(doc_lens: &[Vec<usize>]) -> std::result::Result<SequenceLayout, String> {
        let seq_len: usize = doc_lens.first().map(|r| r.iter().sum()).unwrap_or(0);
        let mut positions = Vec::with_capacity(doc_lens.len() * seq_len);
        let mut documents = Vec::with_capacity(doc_lens.len() * seq_len);
        for (r, row) in doc_lens.iter().enumerate() {
            if row.iter().sum::<usize>() != seq_len {
                return Err(format!("packed row {r} does not have {seq_len} tokens"));
            }
            for (d, &len) in row.iter().enumerate() {
                positions.extend(0..len as u32);
                documents.extend(std::iter::repeat_n(d as u32, len));
            }
        }
        Ok(SequenceLayout {
            batch: doc_lens.len(),
            seq_len,
            cached: 0,
            positions,
            documents: Some(documents),
            keys: None,
        })
    }

    /// The layout of part `parts.part()` of these rows under context parallelism: its tokens
    /// ([`context_columns`]) as queries, every part's as keys, each query seeing the keys of its
    /// document up to its own position. The block must have no cache.
    pub fn context_part(
        &self,
        parts: Arc<dyn Parts>,
    ) -> std::result::Result<SequenceLayout, String> {
        if self.cached != 0 || self.keys.is_some() {
            return Err("only a whole block without a cache splits into context parts".into());
        }
        let n = parts.parts();
        let per_part = (0..n)
            .map(|p| context_columns(self.seq_len, n, p))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let (mine, all) = (&per_part[parts.part()], per_part.concat());
        let pick = |values: &[u32], columns: &[usize]| -> Vec<u32> {
            (0..self.batch)
                .flat_map(|r| columns.iter().map(move |&c| values[r * self.seq_len + c]))
                .collect()
        };
        let documents = self.documents.as_deref();
        Ok(SequenceLayout {
            batch: self.batch,
            seq_len: mine.len(),
            cached: 0,
            positions: pick(&self.positions, mine),
            documents: documents.map(|d| pick(d, mine)),
            keys: Some(PartKeys {
                len: all.len(),
                positions: pick(&self.positions, &all),
                documents: documents.map(|d| pick(d, &all)),
                parts,
            }),
        })
    }

    /// The exchange between the parts when this block is one part of its rows.
    pub fn context(&self) -> Option<&Arc<dyn Parts>> {
        self.keys.as_ref().map(|k| &k.parts)
    }

    /// Rows in the block.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Tokens per row in the block.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Tokens already cached before the block.
    pub fn cached(&self) -> usize {
        self.cached
    }

    /// RoPE positions, row-major.
    pub fn positions(&self) -> &[u32] {
        &self.positions
    }

    /// The additive attention mask `[batch, 1, seq_len, cached + seq_len]` (0 where a query may
    /// attend a key, −∞ elsewhere), or `None` when every query may attend every key (one new
    /// token after a cache).
    pub fn mask(&self, dtype: DType, device: &Device) -> Result<Option<Tensor>> {
        if let Some(keys) = &self.keys {
            return Ok(Some(self.part_mask(keys, device)?.to_dtype(dtype)?));
        }
        if self.seq_len == 1 && self.documents.is_none() {
            return Ok(None);
        }
        let (t, kv) = (self.seq_len, self.cached + self.seq_len);
        let rows = if self.documents.is_some() {
            self.batch
        } else {
            1
        };
        let mut mask = vec![0f32; rows * t * kv];
        for r in 0..rows {
            for i in 0..t {
                for j in 0..kv {
                    let causal = j <= self.cached + i;
                    let same_doc = match &self.documents {
                        Some(docs) => {
                            j >= self.cached && docs[r * t + i] == docs[r * t + j - self.cached]
                        }
                        None => true,
                    };
                    if !(causal && same_doc) {
                        mask[(r * t + i) * kv + j] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        let mask = Tensor::from_vec(mask, (rows, 1, t, kv), device)?;
        Ok(Some(mask.to_dtype(dtype)?))
    }

    /// The mask `[batch, 1, seq_len, keys]` of a part: a query sees a key of its own document
    /// at a position up to its own (positions restart in each document, so within one they are
    /// the order of the tokens).
    fn part_mask(&self, keys: &PartKeys, device: &Device) -> Result<Tensor> {
        let (t, kv) = (self.seq_len, keys.len);
        let mut mask = vec![0f32; self.batch * t * kv];
        for r in 0..self.batch {
            for i in 0..t {
                let query = r * t + i;
                for j in 0..kv {
                    let key = r * kv + j;
                    let same_doc = match (&self.documents, &keys.documents) {
                        (Some(q), Some(k)) => q[query] == k[key],
                        _ => true,
                    };
                    if !(same_doc && keys.positions[key] <= self.positions[query]) {
                        mask[query * kv + j] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        Tensor::from_vec(mask, (self.batch, 1, t, kv), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mask of a layout of one row, as rows of queries.
    fn mask_rows(layout: &SequenceLayout) -> Vec<Vec<f32>> {
        let mask = layout.mask(DType::F32, &Device::Cpu).unwrap().unwrap();
        let square = mask.squeeze(0).unwrap().squeeze(0).unwrap();
        square.to_vec2().unwrap()
    }

    #[test]
    fn packed_rows_restart_positions_and_block_other_documents() {
        let layout = SequenceLayout::packed(&[vec![2, 3]]).unwrap();
        assert_eq!(layout.positions(), &[0, 1, 0, 1, 2]);
        let m = mask_rows(&layout);
        let allowed = |i: usize, j: usize| m[i][j] == 0.0;
        assert!(allowed(1, 0) && !allowed(0, 1));
        assert!(!allowed(2, 1) && !allowed(3, 0) && allowed(4, 2) && allowed(4, 4));
        assert!(SequenceLayout::packed(&[vec![2, 3], vec![4]]).is_err());
    }

    #[test]
    fn context_parts_hold_balanced_chunks_and_see_their_documents_keys() {
        assert_eq!(context_columns(8, 2, 0).unwrap(), vec![0, 1, 6, 7]);
        assert_eq!(context_columns(8, 2, 1).unwrap(), vec![2, 3, 4, 5]);
        assert!(context_columns(6, 2, 0).is_err());
        #[derive(Debug)]
        struct Two(usize);
        impl Parts for Two {
            fn parts(&self) -> usize {
                2
            }
            fn part(&self) -> usize {
                self.0
            }
            fn sum(&self, _: &mut [f32]) -> Result<()> {
                unreachable!()
            }
            fn gather(&self, _: &[f32], _: &mut [f32]) -> Result<()> {
                unreachable!()
            }
            fn reduce_scatter(&self, _: &[f32], _: &mut [f32]) -> Result<()> {
                unreachable!()
            }
        }
        // One row of two documents, 3 and 5 tokens.
        let whole = SequenceLayout::packed(&[vec![3, 5]]).unwrap();
        let full = mask_rows(&whole);
        for part in 0..2 {
            let layout = whole.context_part(Arc::new(Two(part))).unwrap();
            let columns = context_columns(8, 2, part).unwrap();
            let keys = [
                context_columns(8, 2, 0).unwrap(),
                context_columns(8, 2, 1).unwrap(),
            ]
            .concat();
            let positions: Vec<u32> = columns.iter().map(|&c| whole.positions()[c]).collect();
            assert_eq!(layout.positions(), positions.as_slice());
            let m = mask_rows(&layout);
            assert_eq!((m.len(), m[0].len()), (4, 8));
            // Each query sees exactly the keys the whole row's query at its column sees.
            for (i, &c) in columns.iter().enumerate() {
                for (j, &k) in keys.iter().enumerate() {
                    assert_eq!(m[i][j], full[c][k], "part {part}, query {c}, key {k}");
                }
            }
        }
    }

    #[test]
    fn one_token_after_the_cache_needs_no_mask() {
        let layout = SequenceLayout::causal(2, 1, 9);
        assert_eq!(layout.positions(), &[9, 9]);
        assert!(layout.mask(DType::F32, &Device::Cpu).unwrap().is_none());
        let prefill = SequenceLayout::causal(1, 3, 2);
        let m = prefill.mask(DType::F32, &Device::Cpu).unwrap().unwrap();
        assert_eq!(m.dims(), &[1, 1, 3, 5]);
    }
}

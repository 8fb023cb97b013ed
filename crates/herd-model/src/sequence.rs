//! Where the tokens of a forward pass sit: their RoPE positions and which document each belongs
//! to. Packing, the KV cache and the inter-document mask of the paper (§3.2) are arguments of the
//! forward pass described here, not modes of the model.

use candle_core::{DType, Device, Result, Tensor};

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
        })
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_rows_restart_positions_and_block_other_documents() {
        let layout = SequenceLayout::packed(&[vec![2, 3]]).unwrap();
        assert_eq!(layout.positions(), &[0, 1, 0, 1, 2]);
        let mask = layout.mask(DType::F32, &Device::Cpu).unwrap().unwrap();
        let m: Vec<Vec<f32>> = mask
            .squeeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2()
            .unwrap();
        let allowed = |i: usize, j: usize| m[i][j] == 0.0;
        assert!(allowed(1, 0) && !allowed(0, 1));
        assert!(!allowed(2, 1) && !allowed(3, 0) && allowed(4, 2) && allowed(4, 4));
        assert!(SequenceLayout::packed(&[vec![2, 3], vec![4]]).is_err());
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

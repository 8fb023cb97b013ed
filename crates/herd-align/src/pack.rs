//! Packing post-training sequences into the rows of a training batch: each sequence is its
//! own document (positions restart, attention stays inside it), rows are filled first-fit in
//! the given order, and the rest of a row is padding that carries no loss. A sequence longer
//! than a row keeps its first `seq_len` tokens (the caller counts these).
//!
//! A sequence of `L` tokens takes `L` input positions; position `j` predicts token `j + 1`
//! with the loss mask of that token, and its last position predicts nothing.

use herd_train::loader::Batch;

use crate::masks::Masked;

/// Where a sequence sits in the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Row.
    pub row: usize,
    /// First position in the row.
    pub start: usize,
    /// Tokens kept.
    pub len: usize,
}

impl Span {
    /// Index of the sequence's last token in the flattened `rows × seq_len` batch.
    pub fn last(&self, seq_len: usize) -> usize {
        self.row * seq_len + self.start + self.len - 1
    }
}

/// A packed batch and where each sequence went.
#[derive(Debug, Clone)]
pub struct Packed {
    /// The rows.
    pub batch: Batch,
    /// One span per input sequence, in input order.
    pub spans: Vec<Span>,
    /// Sequences cut to fit a row.
    pub truncated: usize,
}

/// Packs `sequences` into rows of `seq_len` positions.
pub fn pack(sequences: &[&Masked], seq_len: usize) -> Packed {
    let mut fill: Vec<usize> = Vec::new();
    let mut spans = Vec::with_capacity(sequences.len());
    let mut truncated = 0;
    for s in sequences {
        let len = s.ids.len().min(seq_len).max(1);
        truncated += usize::from(s.ids.len() > seq_len);
        let row = match fill.iter().position(|&used| used + len <= seq_len) {
            Some(row) => row,
            None => {
                fill.push(0);
                fill.len() - 1
            }
        };
        spans.push(Span {
            row,
            start: fill[row],
            len,
        });
        fill[row] += len;
    }
    let rows = fill.len();
    let mut batch = Batch {
        rows,
        seq_len,
        inputs: vec![0; rows * seq_len],
        targets: vec![0; rows * seq_len],
        weights: vec![0.0; rows * seq_len],
        doc_lens: vec![Vec::new(); rows],
    };
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&i| (spans[i].row, spans[i].start));
    for i in order {
        let (span, s) = (spans[i], sequences[i]);
        let at = span.row * seq_len + span.start;
        batch.inputs[at..at + span.len].copy_from_slice(&s.ids[..span.len]);
        for j in 0..span.len.saturating_sub(1) {
            batch.targets[at + j] = s.ids[j + 1];
            batch.weights[at + j] = if s.loss[j + 1] { 1.0 } else { 0.0 };
        }
        batch.doc_lens[span.row].push(span.len);
    }
    for (row, used) in fill.iter().enumerate() {
        if *used < seq_len {
            batch.doc_lens[row].push(seq_len - used);
        }
    }
    Packed {
        batch,
        spans,
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(ids: &[u32], loss_from: usize) -> Masked {
        Masked {
            ids: ids.to_vec(),
            loss: (0..ids.len()).map(|i| i >= loss_from).collect(),
        }
    }

    #[test]
    fn sequences_are_packed_first_fit_with_padding_and_masks() {
        let (a, b, c) = (
            seq(&[1, 2, 3, 4], 2),
            seq(&[5, 6, 7, 8, 9], 3),
            seq(&[10, 11], 1),
        );
        let p = pack(&[&a, &b, &c], 6);
        assert_eq!(p.batch.rows, 2);
        assert_eq!(
            p.spans,
            vec![
                Span {
                    row: 0,
                    start: 0,
                    len: 4
                },
                Span {
                    row: 1,
                    start: 0,
                    len: 5
                },
                Span {
                    row: 0,
                    start: 4,
                    len: 2
                },
            ]
        );
        assert_eq!(p.batch.inputs, [1, 2, 3, 4, 10, 11, 5, 6, 7, 8, 9, 0]);
        assert_eq!(p.batch.targets, [2, 3, 4, 0, 11, 0, 6, 7, 8, 9, 0, 0]);
        // A target carries loss when its token does: a's 3 and 4, b's 8 and 9, c's 11.
        assert_eq!(
            p.batch.weights,
            [0., 1., 1., 0., 1., 0., 0., 0., 1., 1., 0., 0.]
        );
        assert_eq!(p.batch.doc_lens, vec![vec![4, 2], vec![5, 1]]);
        assert_eq!((p.spans[1].last(6), p.truncated), (10, 0));
    }

    #[test]
    fn long_sequences_are_cut_and_counted() {
        let long = seq(&[1, 2, 3, 4, 5, 6, 7], 0);
        let p = pack(&[&long], 4);
        assert_eq!((p.truncated, p.batch.inputs.clone()), (1, vec![1, 2, 3, 4]));
        assert_eq!(p.batch.doc_lens, vec![vec![4]]);
    }
}

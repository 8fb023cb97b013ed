//! `Llama::step` on the paged KV cache — several sequences' new tokens in one pass, each
//! attending over its own blocks — against:
//! - candle's attention over a contiguous cache (`hidden_states`, an independent
//!   implementation): within 1e-4;
//! - each sequence run alone through `step`: bit for bit on a quantized model (herd's kernels
//!   compute each row on its own, so a row's numbers do not depend on the others in the batch)
//!   and to f32 rounding on a dense one (candle's GEMM blocks its work by the number of rows);
//! - the same tokens in other chunks, and behind blocks shared with another sequence: bit for
//!   bit, whatever the model.

mod common;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use herd_model::checkpoint;
use herd_model::paged::{blocks_for, BLOCK_TOKENS};
use herd_model::{seeded_weights, KvCache, Llama, PagedKv, PagedSeq, SequenceLayout};

fn tokens(seed: u32, n: usize) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i * 37 + seed * 11 + 5) % 96)
        .collect()
}

fn dense() -> Llama {
    let config = seeded_weights::small_config();
    let weights = seeded_weights::weights(&config, &Device::Cpu).unwrap();
    Llama::load(config, &weights, DType::F32, &Device::Cpu).unwrap()
}

fn quantized() -> Llama {
    let config = seeded_weights::small_config();
    let weights = seeded_weights::weights(&config, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.gguf");
    common::write_gguf(&path, &config, &weights, GgmlDType::Q8_0);
    let ckpt = checkpoint::load(&path, &Device::Cpu).unwrap();
    Llama::load(ckpt.config, &ckpt.weights, DType::F32, &Device::Cpu).unwrap()
}

/// The last token's final hidden state after feeding `chunks` one after another through candle's
/// attention on a contiguous cache.
fn contiguous(model: &Llama, chunks: &[Vec<u32>]) -> Vec<f32> {
    let mut cache = KvCache::new(model.config().n_layers, 256);
    let mut last = Vec::new();
    for chunk in chunks {
        let input = Tensor::new(chunk.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let layout = SequenceLayout::causal(1, chunk.len(), cache.len());
        let hidden = model
            .hidden_states(&input, &layout, Some(&mut cache))
            .unwrap();
        last = hidden
            .narrow(1, chunk.len() - 1, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
    }
    last
}

/// The last token's final hidden state after feeding `chunks` one after another through
/// `step`, alone, on a pool of its own whose table runs backwards (any order of blocks works).
fn alone(model: &Llama, chunks: &[Vec<u32>]) -> Vec<f32> {
    let mut kv = PagedKv::new(model.config(), 16);
    let table: Vec<u32> = (0..16).rev().collect();
    let mut cached = 0;
    let mut last = Vec::new();
    for chunk in chunks {
        let seq = PagedSeq {
            blocks: &table,
            cached,
        };
        last = model
            .step(&[chunk], &mut kv, &[seq])
            .unwrap()
            .to_vec2()
            .unwrap()[0]
            .clone();
        cached += chunk.len();
    }
    last
}

fn worst(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Three sequences through three steps of mixed shapes (prompt chunks and single tokens, one
/// sequence joining late, one crossing block boundaries): the worst difference of each step's
/// hidden states from each sequence alone, and from candle's attention.
fn compare(model: &Llama) -> (f32, f32) {
    let a = [tokens(1, 9), tokens(2, 1), tokens(3, 1)];
    let b = [tokens(4, 1), tokens(5, 17), tokens(6, 1)];
    let c = [tokens(7, 30), tokens(8, 1)];
    let steps: [Vec<(usize, &Vec<u32>)>; 3] = [
        vec![(0, &a[0]), (1, &b[0])],
        vec![(0, &a[1]), (1, &b[1]), (2, &c[0])],
        vec![(0, &a[2]), (1, &b[2]), (2, &c[1])],
    ];
    // Interleaved tables in one pool.
    let mut kv = PagedKv::new(model.config(), 12);
    let tables: Vec<Vec<u32>> = (0..3u32).map(|s| vec![s, s + 3, s + 6, s + 9]).collect();
    let mut cached = [0usize; 3];
    let (mut batch, mut candle) = (0f32, 0f32);
    for (s, step) in steps.iter().enumerate() {
        let ids: Vec<&[u32]> = step.iter().map(|(_, t)| t.as_slice()).collect();
        let seqs: Vec<PagedSeq> = step
            .iter()
            .map(|(i, _)| PagedSeq {
                blocks: &tables[*i],
                cached: cached[*i],
            })
            .collect();
        let hidden: Vec<Vec<f32>> = model.step(&ids, &mut kv, &seqs).unwrap().to_vec2().unwrap();
        for (row, (i, t)) in step.iter().enumerate() {
            cached[*i] += t.len();
            let fed: Vec<Vec<u32>> = match i {
                0 => a[..=s].to_vec(),
                1 => b[..=s].to_vec(),
                _ => c[..s].to_vec(),
            };
            batch = batch.max(worst(&hidden[row], &alone(model, &fed)));
            candle = candle.max(worst(&hidden[row], &contiguous(model, &fed)));
        }
    }
    (batch, candle)
}

#[test]
fn a_batched_step_equals_each_sequence_alone_and_candles_attention() {
    let (batch, candle) = compare(&dense());
    assert!(batch < 1e-4 && candle < 1e-4, "dense: {batch} {candle}");
    let (batch, candle) = compare(&quantized());
    assert_eq!(batch, 0.0, "quantized: not bit-identical");
    assert!(candle < 1e-4, "quantized against candle: {candle}");
}

/// A prompt read in one chunk, in uneven chunks, or behind blocks another sequence wrote (a
/// shared prefix): the same numbers, bit for bit.
#[test]
fn chunking_and_shared_prefixes_do_not_move_a_bit() {
    let model = quantized();
    let prompt = tokens(11, 3 * BLOCK_TOKENS + 5);
    let whole = alone(&model, std::slice::from_ref(&prompt));
    let pieces = [&prompt[..7], &prompt[7..40], &prompt[40..41], &prompt[41..]];
    assert_eq!(alone(&model, &pieces.map(<[u32]>::to_vec)), whole);

    // Sequence 0 reads the prompt; sequence 1 shares its first two blocks and reads the rest.
    let mut kv = PagedKv::new(model.config(), 8);
    let first: Vec<u32> = (0..4).collect();
    model
        .step(
            &[&prompt],
            &mut kv,
            &[PagedSeq {
                blocks: &first,
                cached: 0,
            }],
        )
        .unwrap();
    let second = [0, 1, 6, 7];
    let shared = 2 * BLOCK_TOKENS;
    let seq = PagedSeq {
        blocks: &second,
        cached: shared,
    };
    let hidden = model.step(&[&prompt[shared..]], &mut kv, &[seq]).unwrap();
    assert_eq!(hidden.to_vec2::<f32>().unwrap()[0], whole);
    assert_eq!(blocks_for(prompt.len()), 4);
}

/// `step_rows` returns every new position of a scored sequence, beside another sequence's last
/// token: those rows equal the whole-sequence forward pass at each position.
#[test]
fn a_scored_sequence_gets_every_position() {
    let model = quantized();
    let (scored, other) = (tokens(9, 20), tokens(10, 7));
    let mut kv = PagedKv::new(model.config(), 4);
    let tables = [[0u32, 1], [2, 3]];
    let seqs = tables.each_ref().map(|t| PagedSeq {
        blocks: t,
        cached: 0,
    });
    let rows: Vec<Vec<f32>> = model
        .step_rows(
            &[scored.as_slice(), other.as_slice()],
            &mut kv,
            &seqs,
            &[true, false],
        )
        .unwrap()
        .to_vec2()
        .unwrap();
    assert_eq!(rows.len(), scored.len() + 1);
    let input = Tensor::new(scored.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let whole: Vec<Vec<f32>> = model
        .hidden_states(&input, &SequenceLayout::causal(1, scored.len(), 0), None)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2()
        .unwrap();
    for (row, expected) in rows.iter().zip(&whole) {
        assert!(worst(row, expected) < 1e-4);
    }
    assert_eq!(rows[scored.len()], alone(&model, &[other]));
}

/// A table too short for the step's tokens, or naming a block outside the pool, is refused.
#[test]
fn short_or_foreign_tables_are_refused() {
    let model = quantized();
    let mut kv = PagedKv::new(model.config(), 2);
    let prompt = tokens(3, BLOCK_TOKENS + 1);
    let short = PagedSeq {
        blocks: &[0],
        cached: 0,
    };
    let err = model.step(&[&prompt], &mut kv, &[short]).unwrap_err();
    assert!(err.to_string().contains("need 2"), "{err}");
    let foreign = PagedSeq {
        blocks: &[0, 5],
        cached: 0,
    };
    let err = model.step(&[&prompt], &mut kv, &[foreign]).unwrap_err();
    assert!(err.to_string().contains("block 5"), "{err}");
}

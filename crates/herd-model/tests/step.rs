//! `Llama::step` — several sequences' new tokens in one pass, each attending over its own
//! cache — against each sequence run alone: the same final hidden states, bit for bit on a
//! quantized model (herd's kernels compute each row on its own, so a row's numbers do not depend
//! on the others in the batch) and to f32 rounding on a dense one (candle's GEMM blocks its
//! work by the number of rows: 1.2e-6 here).

mod common;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use herd_model::cache::KvStore;
use herd_model::checkpoint;
use herd_model::{seeded_weights, KvCache, Llama, LlamaConfig, SequenceLayout};

fn config() -> LlamaConfig {
    seeded_weights::small_config()
}

fn tokens(seed: u32, n: usize) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i * 37 + seed * 11 + 5) % 96)
        .collect()
}

/// The last token's final hidden state after feeding `chunks` one after another, alone.
fn alone(model: &Llama, chunks: &[Vec<u32>]) -> Vec<f32> {
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

/// Three sequences through three steps of mixed shapes (prompt chunks and single tokens, one
/// sequence joining late): each step's hidden states against each sequence alone.
fn compare(model: &Llama) -> f32 {
    let a = [tokens(1, 9), tokens(2, 1), tokens(3, 1)];
    let b = [tokens(4, 1), tokens(5, 17), tokens(6, 1)];
    let c = [tokens(7, 30), tokens(8, 1)];
    let steps: [Vec<(usize, &Vec<u32>)>; 3] = [
        vec![(0, &a[0]), (1, &b[0])],
        vec![(0, &a[1]), (1, &b[1]), (2, &c[0])],
        vec![(0, &a[2]), (1, &b[2]), (2, &c[1])],
    ];
    let mut caches: Vec<KvCache> = (0..3).map(|_| KvCache::new(2, 256)).collect();
    let mut worst = 0f32;
    for (s, step) in steps.iter().enumerate() {
        let ids: Vec<&[u32]> = step.iter().map(|(_, t)| t.as_slice()).collect();
        let mut stores: Vec<&mut dyn KvStore> = Vec::new();
        for (i, cache) in caches.iter_mut().enumerate() {
            if step.iter().any(|(j, _)| *j == i) {
                stores.push(cache);
            }
        }
        let hidden: Vec<Vec<f32>> = model.step(&ids, &mut stores).unwrap().to_vec2().unwrap();
        for (row, (i, _)) in step.iter().enumerate() {
            let fed: Vec<Vec<u32>> = match i {
                0 => a[..=s].to_vec(),
                1 => b[..=s].to_vec(),
                _ => c[..s].to_vec(),
            };
            let expected = alone(model, &fed);
            for (x, y) in hidden[row].iter().zip(&expected) {
                worst = worst.max((x - y).abs());
            }
        }
    }
    worst
}

#[test]
fn a_batched_step_equals_each_sequence_alone() {
    let config = config();
    let weights = seeded_weights::weights(&config, &Device::Cpu).unwrap();
    let dense = Llama::load(config.clone(), &weights, DType::F32, &Device::Cpu).unwrap();
    let diff = compare(&dense);
    assert!(diff < 1e-4, "dense: {diff}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.gguf");
    common::write_gguf(&path, &config, &weights, GgmlDType::Q8_0);
    let ckpt = checkpoint::load(&path, &Device::Cpu).unwrap();
    let quantized = Llama::load(ckpt.config, &ckpt.weights, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(compare(&quantized), 0.0, "quantized: not bit-identical");
}

/// `step_rows` returns every new position of a scored sequence, beside another sequence's last
/// token: those rows equal the whole-sequence forward pass at each position.
#[test]
fn a_scored_sequence_gets_every_position() {
    let config = config();
    let weights = seeded_weights::weights(&config, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.gguf");
    common::write_gguf(&path, &config, &weights, GgmlDType::Q8_0);
    let ckpt = checkpoint::load(&path, &Device::Cpu).unwrap();
    let model = Llama::load(ckpt.config, &ckpt.weights, DType::F32, &Device::Cpu).unwrap();
    let (scored, other) = (tokens(9, 20), tokens(10, 7));
    let mut caches: Vec<KvCache> = (0..2).map(|_| KvCache::new(2, 256)).collect();
    let [a, b] = &mut caches[..] else {
        unreachable!()
    };
    let mut stores: Vec<&mut dyn KvStore> = vec![a, b];
    let rows: Vec<Vec<f32>> = model
        .step_rows(
            &[scored.as_slice(), other.as_slice()],
            &mut stores,
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
    assert_eq!(&rows[..scored.len()], &whole[..]);
    assert_eq!(rows[scored.len()], alone(&model, &[other]));
}

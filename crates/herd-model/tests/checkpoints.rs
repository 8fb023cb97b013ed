//! Checkpoint adapters: every format gives the same model, and bad files give errors that name
//! the file and the tensor.

mod common;

use std::path::Path;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use common::write_gguf;
use herd_model::checkpoint::{self, hf, Format};
use herd_model::{
    seeded_weights as seeded, Error, Llama, LlamaConfig, SequenceLayout, Weight, Weights,
};
use serde_json::Value;

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

fn tiny_config() -> LlamaConfig {
    let text = std::fs::read_to_string(fixtures().join("config_rope_scaling.json")).unwrap();
    LlamaConfig {
        vocab_size: 512,
        tie_embeddings: false,
        ..hf::parse_config(&text).unwrap()
    }
}

fn logits(model: &Llama, tokens: &[u32]) -> Vec<Vec<f32>> {
    let input = Tensor::new(tokens, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let layout = SequenceLayout::causal(1, tokens.len(), 0);
    model
        .forward(&input, &layout, None)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2()
        .unwrap()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

const TOKENS: [u32; 12] = [1, 17, 300, 42, 511, 7, 7, 99, 250, 3, 128, 64];

#[test]
fn both_config_spellings_read_the_same() {
    let read = |f: &str| hf::read_config(&fixtures().join(f)).unwrap();
    let v4 = read("config_rope_scaling.json");
    assert_eq!(v4, read("config_rope_parameters.json"));
    assert_eq!(v4.rope_theta, 500_000.0);
    assert!(
        matches!(v4.rope_scaling, Some(herd_model::RopeScaling::Llama3 { factor, .. }) if factor == 8.0)
    );
}

#[test]
fn meta_checkpoint_matches_llama_models_reference() {
    let dir = fixtures().join("meta_tiny");
    let ckpt = checkpoint::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(ckpt.format, Format::Meta);
    assert_eq!(ckpt.config.ffn_dim, 112);
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let tokens: Vec<u32> = reference["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let model = Llama::load(ckpt.config.clone(), &ckpt.weights, DType::F32, &Device::Cpu).unwrap();
    let ours = logits(&model, &tokens);
    for key in ["logits_meta", "logits_hf"] {
        let expected: Vec<Vec<f32>> = serde_json::from_value(reference[key].clone()).unwrap();
        let diff = max_diff(&ours, &expected);
        assert!(diff < 1e-4, "{key}: {diff}");
    }
    // Saved as HF safetensors and read back: the same logits, bit for bit.
    let out = tempfile::tempdir().unwrap();
    hf::save(
        out.path(),
        &ckpt.config,
        &ckpt.weights,
        DType::F32,
        usize::MAX,
    )
    .unwrap();
    let back = checkpoint::load(out.path(), &Device::Cpu).unwrap();
    assert_eq!(back.format, Format::Hf);
    let again = Llama::load(back.config, &back.weights, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(logits(&again, &tokens), ours);
}

#[test]
fn sharded_safetensors_round_trip() {
    let config = tiny_config();
    let weights = seeded::weights(&config, &Device::Cpu).unwrap();
    let model = Llama::load(config.clone(), &weights, DType::F32, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    hf::save(dir.path(), &config, &weights, DType::F32, 40_000).unwrap();
    assert!(dir.path().join("model.safetensors.index.json").exists());
    assert!(
        dir.path().join("model-00002-of-00005.safetensors").exists()
            || std::fs::read_dir(dir.path()).unwrap().count() > 3
    );
    let back = checkpoint::load(dir.path(), &Device::Cpu).unwrap();
    let again = Llama::load(back.config, &back.weights, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(logits(&again, &TOKENS), logits(&model, &TOKENS));
}

#[test]
fn gguf_in_llama_cpp_layout_gives_the_same_model() {
    let config = LlamaConfig {
        rope_scaling: None,
        ..tiny_config()
    };
    let weights = seeded::weights(&config, &Device::Cpu).unwrap();
    let reference = logits(
        &Llama::load(config.clone(), &weights, DType::F32, &Device::Cpu).unwrap(),
        &TOKENS,
    );
    let dir = tempfile::tempdir().unwrap();
    // F32 proves the layout exactly; Q8_0 adds weight and activation (q8) rounding, still far
    // below the error of a wrong row permutation (~2).
    for (dtype, tolerance) in [(GgmlDType::F32, 1e-5), (GgmlDType::Q8_0, 0.15)] {
        let path = dir.path().join(format!("tiny-{dtype:?}.gguf"));
        write_gguf(&path, &config, &weights, dtype);
        let ckpt = checkpoint::load(&path, &Device::Cpu).unwrap();
        assert_eq!(ckpt.format, Format::Gguf);
        assert_eq!(ckpt.config, config);
        let model = Llama::load(ckpt.config, &ckpt.weights, DType::F32, &Device::Cpu).unwrap();
        let diff = max_diff(&logits(&model, &TOKENS), &reference);
        assert!(diff < tolerance, "{dtype:?}: {diff}");
    }
}

/// Every block format loads, and the quantized model computes what its own dequantized weights
/// give: only the 8-bit rounding of activations inside quantized matmuls separates the two (the
/// Q/K layout is proven exactly by the F32 GGUF test above; rows move the same way in every
/// format).
#[test]
fn block_quantized_gguf_formats_load() {
    // 256-wide so that K-quant super-blocks (256 values) fit in a row.
    let config = LlamaConfig {
        dim: 256,
        head_dim: 64,
        ffn_dim: 512,
        rope_scaling: None,
        ..tiny_config()
    };
    let weights = seeded::weights(&config, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for dtype in [
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
        GgmlDType::F16,
    ] {
        let path = dir.path().join(format!("tiny-{dtype:?}.gguf"));
        write_gguf(&path, &config, &weights, dtype);
        let ckpt = checkpoint::load(&path, &Device::Cpu).unwrap();
        assert!(ckpt
            .weights
            .iter()
            .any(|(_, w)| matches!(w, Weight::Quantized(q) if q.dtype() == dtype)));
        let quantized = logits(
            &Llama::load(ckpt.config.clone(), &ckpt.weights, DType::F32, &Device::Cpu).unwrap(),
            &TOKENS,
        );
        let mut dense = Weights::new(&path);
        for (name, w) in ckpt.weights.iter() {
            dense.insert(name.clone(), Weight::Dense(w.to_dense(DType::F32).unwrap()));
        }
        let reference = logits(
            &Llama::load(ckpt.config, &dense, DType::F32, &Device::Cpu).unwrap(),
            &TOKENS,
        );
        let scale = reference
            .iter()
            .flatten()
            .fold(0f32, |m, &x| m.max(x.abs()));
        let diff = max_diff(&quantized, &reference);
        assert!(
            diff < 0.05 * scale,
            "{dtype:?}: {diff} vs logit scale {scale}"
        );
    }
}

#[test]
fn bad_checkpoints_name_the_file_and_tensor() {
    let config = tiny_config();
    let mut weights = seeded::weights(&config, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // A tensor of the wrong shape.
    weights.insert(
        "model.layers.1.mlp.up_proj.weight",
        Weight::Dense(Tensor::zeros((3, 3), DType::F32, &Device::Cpu).unwrap()),
    );
    hf::save(dir.path(), &config, &weights, DType::F32, usize::MAX).unwrap();
    let ckpt = checkpoint::load(dir.path(), &Device::Cpu).unwrap();
    let err = Llama::load(ckpt.config, &ckpt.weights, DType::F32, &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, Error::Shape { name, .. } if name == "model.layers.1.mlp.up_proj.weight"),
        "{err}"
    );
    assert!(err.to_string().contains(&dir.path().display().to_string()));

    // A missing tensor.
    let mut partial = Weights::new(dir.path());
    for (name, w) in seeded::weights(&config, &Device::Cpu).unwrap().iter() {
        if name != "model.norm.weight" {
            partial.insert(name.clone(), w.clone());
        }
    }
    hf::save(dir.path(), &config, &partial, DType::F32, usize::MAX).unwrap();
    let ckpt = checkpoint::load(dir.path(), &Device::Cpu).unwrap();
    let err = Llama::load(ckpt.config, &ckpt.weights, DType::F32, &Device::Cpu).unwrap_err();
    assert!(
        err.to_string().contains("model.norm.weight") && err.to_string().contains("missing"),
        "{err}"
    );

    // A truncated safetensors file.
    let file = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let err = checkpoint::load(dir.path(), &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("model.safetensors"), "{err}");

    // A truncated GGUF: the error names the tensor that could not be read.
    let gguf = dir.path().join("tiny.gguf");
    write_gguf(
        &gguf,
        &config,
        &seeded::weights(&config, &Device::Cpu).unwrap(),
        GgmlDType::F32,
    );
    let bytes = std::fs::read(&gguf).unwrap();
    std::fs::write(&gguf, &bytes[..bytes.len() - 5000]).unwrap();
    let err = checkpoint::load(&gguf, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tiny.gguf") && err.contains("tensor `"),
        "{err}"
    );

    // Not a model at all.
    std::fs::write(&gguf, b"hello").unwrap();
    assert!(checkpoint::load(&gguf, &Device::Cpu)
        .unwrap_err()
        .to_string()
        .contains("not a GGUF"));
}

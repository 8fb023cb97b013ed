//! Fuzzing the model file readers: mutated GGUF files (F32 and Q8_0), safetensors folders
//! (weights and `config.json`) and Meta folders (`params.json` and a PyTorch pickle) must load
//! or fail with an error, never panic; a model that loads runs a forward pass. The seeds are
//! real files: written by candle's GGUF writer and herd's safetensors writer, and the Meta
//! fixture made by `llama_models` (tools/fixtures/make_meta_fixture.py). Regression cases live
//! in `tests/fuzz/<target>/`; `HERD_FUZZ_CASES=N` runs more cases.

mod common;

use std::path::{Path, PathBuf};

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use herd_model::checkpoint::{self, hf};
use herd_model::{seeded_weights, Llama, SequenceLayout};
use herd_util::fuzz;

fn regressions(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz")
        .join(target)
}

/// Loads whatever is at `path`; when it loads, builds the model and runs three tokens through.
fn load_and_run(path: &Path) {
    let Ok(ckpt) = checkpoint::load(path, &Device::Cpu) else {
        return;
    };
    let Ok(model) = Llama::load(ckpt.config, &ckpt.weights, DType::F32, &Device::Cpu) else {
        return;
    };
    let vocab = model.config().vocab_size as u32;
    let tokens: Vec<u32> = [0u32, 1, 2].iter().map(|t| t % vocab).collect();
    let input = Tensor::new(tokens.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let _ = model.forward(&input, &SequenceLayout::causal(1, 3, 0), None);
}

#[test]
fn gguf_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = seeded_weights::tiny_config();
    let weights = seeded_weights::weights(&config, &Device::Cpu).unwrap();
    let seeds: Vec<Vec<u8>> = [GgmlDType::F32, GgmlDType::Q8_0]
        .iter()
        .map(|&dtype| {
            let path = dir.path().join("seed.gguf");
            common::write_gguf(&path, &config, &weights, dtype);
            std::fs::read(&path).unwrap()
        })
        .collect();
    let case = dir.path().join("case.gguf");
    fuzz::run("gguf", &seeds, &regressions("gguf"), 300, |bytes| {
        std::fs::write(&case, bytes).unwrap();
        load_and_run(&case);
    });
}

#[test]
fn safetensors_folders() {
    let dir = tempfile::tempdir().unwrap();
    let config = seeded_weights::tiny_config();
    let weights = seeded_weights::weights(&config, &Device::Cpu).unwrap();
    let seed_dir = dir.path().join("seed");
    hf::save(&seed_dir, &config, &weights, DType::F32, usize::MAX).unwrap();
    let config_json = std::fs::read(seed_dir.join("config.json")).unwrap();
    let tensors = std::fs::read(seed_dir.join("model.safetensors")).unwrap();
    let case = dir.path().join("case");
    std::fs::create_dir_all(&case).unwrap();
    // One target mutates the weights file, the other the config; each case is the folder.
    std::fs::write(case.join("config.json"), &config_json).unwrap();
    fuzz::run(
        "safetensors",
        std::slice::from_ref(&tensors),
        &regressions("safetensors"),
        300,
        |bytes| {
            std::fs::write(case.join("model.safetensors"), bytes).unwrap();
            load_and_run(&case);
        },
    );
    std::fs::write(case.join("model.safetensors"), &tensors).unwrap();
    fuzz::run(
        "config_json",
        &[config_json],
        &regressions("config_json"),
        300,
        |bytes| {
            std::fs::write(case.join("config.json"), bytes).unwrap();
            load_and_run(&case);
        },
    );
}

#[test]
fn meta_folders() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/meta_tiny");
    let params = std::fs::read(fixture.join("params.json")).unwrap();
    let pickle = std::fs::read(fixture.join("consolidated.00.pth")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path();
    std::fs::write(case.join("params.json"), &params).unwrap();
    fuzz::run(
        "meta_pth",
        std::slice::from_ref(&pickle),
        &regressions("meta_pth"),
        150,
        |bytes| {
            std::fs::write(case.join("consolidated.00.pth"), bytes).unwrap();
            load_and_run(case);
        },
    );
    std::fs::write(case.join("consolidated.00.pth"), &pickle).unwrap();
    fuzz::run(
        "params_json",
        &[params],
        &regressions("params_json"),
        150,
        |bytes| {
            std::fs::write(case.join("params.json"), bytes).unwrap();
            load_and_run(case);
        },
    );
}

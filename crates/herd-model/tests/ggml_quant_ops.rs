//! herd's quantized kernels against ggml's own functions on real SmolLM2 rows: Q4_1 against
//! `quantize_row_q8_1` + `ggml_vec_dot_q4_1_q8_1`, Q8_0 against `quantize_row_q8_0` +
//! `ggml_vec_dot_q8_0_q8_0` (fixture made with llama.cpp's CPU library by
//! `tools/reference/ggml_quant_ops.py`): the same activation rounding, including exact .5 ties,
//! and block arithmetic, up to float summation order (a few f32 roundings of the row's terms).

use std::fs::File;

use candle_core::quantized::gguf_file::Content;
use candle_core::Device;
use herd_model::quantized::QuantMatrix;
use serde_json::Value;

fn hex_f32(hex: &str) -> Vec<f32> {
    (0..hex.len())
        .step_by(8)
        .map(|i| {
            let b: Vec<u8> = (0..4)
                .map(|j| u8::from_str_radix(&hex[i + 2 * j..i + 2 * j + 2], 16).unwrap())
                .collect();
            f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        })
        .collect()
}

#[test]
fn quantized_dot_products_equal_ggml() {
    let Some(gguf) = herd_util::testing::asset("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/ggml_quant_ops.json")).unwrap();
    let mut file = File::open(&gguf).unwrap();
    let content = Content::read(&mut file).unwrap();
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["tensor"].as_str().unwrap();
        let q = content.tensor(&mut file, name, &Device::Cpu).unwrap();
        let [rows, cols] = *q.shape().dims() else {
            panic!("{name} is not a matrix")
        };
        let matrix = QuantMatrix::new(q.dtype(), rows, cols, &q.data().unwrap()).unwrap();
        let x = hex_f32(case["x_f32_hex"].as_str().unwrap());
        let y = matrix.matmul(&x, 1);
        let dense: Vec<Vec<f32>> = q.dequantize(&Device::Cpu).unwrap().to_vec2().unwrap();
        for (r, expected) in case["dots"].as_array().unwrap().iter().enumerate() {
            let expected = expected.as_f64().unwrap() as f32;
            // herd sums the same exact integer block products in another order (8 blocks'
            // scaled sums at a time, ggml one block at a time): they agree to f32 rounding of
            // the row's terms.
            let magnitude: f32 = dense[r].iter().zip(&x).map(|(w, x)| (w * x).abs()).sum();
            let tolerance = 2e-7 * magnitude + 2e-6 * expected.abs().max(1.0);
            assert!(
                (y[r] - expected).abs() <= tolerance,
                "{name} row {r}: herd {} vs ggml {expected}",
                y[r]
            );
        }
    }
}

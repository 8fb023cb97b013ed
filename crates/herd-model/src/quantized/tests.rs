//! The kernels against the scalar reference and the dequantized products.

use super::activations::{quantize_block_scalar, quantize_row};
use super::*;
use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| ((herd_util::seeded::splitmix64(&mut s) >> 40) as f32 / 16_777_216.0) * 2.0 - 1.0)
        .collect()
}

#[test]
fn activation_rounding_is_ggmls() {
    // 0.5 steps round to even, the scale is f16(amax/127).
    let mut x = vec![0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = -3.5;
    let row = quantize_row(&x);
    assert_eq!(row.q[0][1], 2);
    assert_eq!(row.q[0][2], -4);
    assert_eq!(row.d[0], 1.0);
    assert_eq!(row.s[0], f16::from_f32(127.0 + 2.0 - 4.0).to_f32());
}

#[test]
fn simd_and_scalar_agree_with_dequantized_products() {
    assert!(QuantMatrix::new(GgmlDType::Q4_0, 1, 32, &[0; 18]).is_none());
    let dev = Device::Cpu;
    // 102 weight rows: 25 tiles of 4 and two single rows; 6 activation rows: one tile of 4
    // and two single rows; 11 blocks per row: a group of 8 and a partial group of 3 (an odd
    // block out of a 512-bit pair).
    let (rows, cols, n) = (102, 352, 6);
    let w = Tensor::from_vec(random(rows * cols, 1), (rows, cols), &dev).unwrap();
    let x = random(n * cols, 2);
    for (dtype, format) in [
        (GgmlDType::Q4_1, Format::Q4_1),
        (GgmlDType::Q8_0, Format::Q8_0),
        (GgmlDType::F16, Format::F16),
    ] {
        let q = QTensor::quantize(&w, dtype).unwrap();
        let m = QuantMatrix::new(dtype, rows, cols, &q.data().unwrap()).unwrap();
        let y = m.matmul(&x, n);
        let wd: Vec<Vec<f32>> = q.dequantize(&dev).unwrap().to_vec2().unwrap();
        let acts = match format {
            Format::F16 => Activations::F32 { x: &x, cols },
            _ => Activations::Q8(x.chunks_exact(cols).map(quantize_row).collect()),
        };
        for j in 0..n {
            let xj = &x[j * cols..(j + 1) * cols];
            let amax: Vec<f32> = xj
                .chunks(BLOCK)
                .map(|b| b.iter().fold(0f32, |m, v| m.max(v.abs())))
                .collect();
            for r in 0..rows {
                let got = y[j * rows + r];
                let terms = wd[r].iter().zip(xj).map(|(a, b)| a * b);
                let exact: f32 = terms.clone().sum();
                let magnitude: f32 = terms.map(f32::abs).sum();
                // Against the dequantized weights: rounding activations to 8 bits moves each
                // by at most amax/254 of its block, and Q4_1's block sums are rounded to f16
                // (|m| ≤ 1 here); F16 weights leave only the summation order.
                let bound: f32 = match format {
                    Format::F16 => 1e-5 * magnitude,
                    _ => wd[r]
                        .iter()
                        .zip(xj)
                        .enumerate()
                        .map(|(i, (w, x))| w.abs() * amax[i / BLOCK] / 254.0 + x.abs() / 1024.0)
                        .sum(),
                };
                assert!(
                    (got - exact).abs() <= bound + 1e-5,
                    "{dtype:?} {j} {r}: {got} vs {exact} (bound {bound})"
                );
                // The scalar reference gives the dispatched (SIMD) result up to the order of
                // the f32 sums.
                let [[scalar]] = dot_tile::<1, 1>(Isa::Scalar, format, [m.row(r)], &acts, j);
                assert!(
                    (scalar - got).abs() <= 1e-5 * (magnitude + 1.0),
                    "{dtype:?} {j} {r}: scalar {scalar} vs {got}"
                );
            }
        }
        // For quantized weights the AVX-512 kernels give AVX2's sums bit for bit.
        let w0 = m.row(0);
        #[cfg(target_arch = "x86_64")]
        if isa() == Isa::Avx512 && format != Format::F16 {
            // Two rows take the 512-bit kernel, one row the 256-bit VNNI one.
            let avx2 = dot_tile::<1, 2>(Isa::Avx2, format, [w0], &acts, 0);
            assert_eq!(dot_tile::<1, 2>(Isa::Avx512, format, [w0], &acts, 0), avx2);
            let [[one]] = dot_tile::<1, 1>(Isa::Avx512, format, [w0], &acts, 0);
            assert_eq!(one, avx2[0][0]);
        }
    }
}

#[test]
fn products_together_equal_products_alone() {
    let dev = Device::Cpu;
    let (cols, n) = (96, 5);
    let x = random(n * cols, 3);
    for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0, GgmlDType::F16] {
        let matrices: Vec<QuantMatrix> = [(7, 4), (12, 5), (3, 6)]
            .iter()
            .map(|&(rows, seed)| {
                let w = Tensor::from_vec(random(rows * cols, seed), (rows, cols), &dev).unwrap();
                let q = QTensor::quantize(&w, dtype).unwrap();
                QuantMatrix::new(dtype, rows, cols, &q.data().unwrap()).unwrap()
            })
            .collect();
        let together = QuantMatrix::matmul_many(&matrices.iter().collect::<Vec<_>>(), &x, n);
        for (m, y) in matrices.iter().zip(&together) {
            assert_eq!(*y, m.matmul(&x, n), "{dtype:?}");
        }
    }
}

#[test]
fn simd_quantization_is_the_scalar_one() {
    let mut x = random(64 * BLOCK, 4);
    // Exact .5 ties after scaling (amax 127): 2.5 → 2, -3.5 → -4, 0.5 → 0.
    x[..4].copy_from_slice(&[127.0, 2.5, -3.5, 0.5]);
    x[BLOCK..2 * BLOCK].fill(0.0);
    // A corrupt model's activations: infinities, NaN, a denormal maximum (its inverse is
    // infinite). No panic, and the same bytes and sums from both paths.
    x[2 * BLOCK..2 * BLOCK + 3].copy_from_slice(&[f32::INFINITY, -1.0, f32::NAN]);
    x[3 * BLOCK..4 * BLOCK].fill(1e-40);
    x[3 * BLOCK + 1] = -1e-40;
    for block in x.chunks_exact(BLOCK) {
        let block: &[f32; BLOCK] = block.try_into().unwrap();
        #[cfg(target_arch = "x86_64")]
        if isa() != Isa::Scalar {
            // SAFETY: the CPU has AVX2 (checked by `isa()`).
            assert_eq!(
                unsafe { simd::quantize_block(block) },
                quantize_block_scalar(block)
            );
        }
        quantize_row(block);
    }
}

#[test]
#[should_panic(expected = "rows of 32 inputs expected")]
fn products_check_the_input_length() {
    let matrix = QuantMatrix::new(GgmlDType::Q8_0, 1, 32, &[0; 34]).unwrap();
    matrix.matmul(&[1.0; 31], 1);
}

//! Rotary position embedding (RoPE) with θ = 500,000 and Llama 3.1's frequency scaling.
//!
//! herd keeps query/key features in the half-split layout of HF checkpoints: feature `i` of a
//! head rotates with feature `i + head_dim/2`. Meta's and GGUF checkpoints rotate adjacent pairs;
//! their adapters permute the query/key projection rows once at load time (see `checkpoint`).

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use num_traits::Zero;

use crate::for_real_dtype;
use crate::kernel::{for_each_row, slice, storage, Real};

use crate::config::{LlamaConfig, RopeScaling};

/// The rotation frequencies of one attention head.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    /// Frequencies `θ^(-2i/d)` for `i < d/2`, rescaled as the config says. The arithmetic is
    /// the references' own, in f32 (HF `_compute_default_rope_parameters` and
    /// `_compute_llama3_parameters`, `llama_models` `precompute_freqs_cis`/`apply_scaling`; torch's
    /// CPU `pow` rounds a double-precision power to f32): at positions near 10^4 a one-ulp
    /// difference in a frequency moves logits by ~5e-4.
    pub fn new(config: &LlamaConfig) -> Rope {
        let d = config.head_dim;
        let base: Vec<f32> = (0..d / 2)
            .map(|i| {
                let exponent = (2 * i) as f32 / d as f32;
                1.0 / (config.rope_theta.powf(exponent as f64) as f32)
            })
            .collect();
        let inv_freq = match &config.rope_scaling {
            None => base,
            Some(scaling) => scale_frequencies(&base, scaling),
        };
        Rope { inv_freq }
    }

    /// The frequencies, one per rotated pair.
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// `cos` and `sin` of `position · frequency`, shaped `[batch, seq, head_dim/2]`, computed
    /// in f32 like the reference implementations and then cast to `dtype`.
    pub fn cos_sin(
        &self,
        positions: &[u32],
        batch: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for &f in &self.inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let shape = (batch, positions.len() / batch, half);
        let cos = Tensor::from_vec(cos, shape, device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, shape, device)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }

    /// Rotates `x` (`[batch, heads, seq, head_dim]`) by the angles in `cos`/`sin` (half-split
    /// pairs `(i, i + head_dim/2)`). f32/f64 on the CPU run herd's op, which has a backward pass
    /// (the rotation by the opposite angle); other dtypes and devices run candle's kernel.
    pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        if x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) {
            x.apply_op3(
                &cos.contiguous()?,
                &sin.contiguous()?,
                RopeOp { inverse: false },
            )
        } else {
            candle_nn::rotary_emb::rope(&x, cos, sin)
        }
    }
}

/// Half-split rotation of `[batch, heads, seq, head_dim]` rows by `cos`/`sin`
/// (`[batch, seq, head_dim/2]`); `inverse` rotates by the opposite angle, which is the
/// gradient of the rotation.
#[derive(Debug, Clone, Copy)]
struct RopeOp {
    inverse: bool,
}

impl CustomOp3 for RopeOp {
    fn name(&self) -> &'static str {
        "herd-rope"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        cs: &CpuStorage,
        cl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, h, t, d) = xl.shape().dims4()?;
        let half = d / 2;
        if cl.shape().elem_count() != b * t * half || sl.shape().elem_count() != b * t * half {
            candle_core::bail!("rope: cos/sin are {:?}, x is {:?}", cl.shape(), xl.shape());
        }
        let sign = if self.inverse { -1.0 } else { 1.0 };
        for_real_dtype!(xs, T => {
            let (x, cos, sin) = (slice::<T>(xs, xl)?, slice::<T>(cs, cl)?, slice::<T>(ss, sl)?);
            let sign = T::narrow(sign);
            let mut out = vec![T::zero(); x.len()];
            for_each_row(&mut out, t * d, |bh, out| {
                    let x = &x[bh * t * d..(bh + 1) * t * d];
                    let angles = (bh / h) * t * half;
                    for p in 0..t {
                        let (row, o) = (&x[p * d..(p + 1) * d], &mut out[p * d..(p + 1) * d]);
                        let at = angles + p * half;
                        for i in 0..half {
                            let (c, s) = (cos[at + i], sin[at + i] * sign);
                            let (x1, x2) = (row[i], row[i + half]);
                            o[i] = x1 * c - x2 * s;
                            o[i + half] = x2 * c + x1 * s;
                        }
                    }
                });
            Ok((storage(out), xl.shape().clone()))
        })
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let inverse = RopeOp {
            inverse: !self.inverse,
        };
        let dx = dy.contiguous()?.apply_op3_no_bwd(cos, sin, &inverse)?;
        Ok((Some(dx), None, None))
    }
}

/// Llama 3.1 scaling (`apply_scaling` in `llama_models`, `_compute_llama3_parameters` in HF):
/// wavelengths longer than `original/low_freq_factor` are divided by `factor`, shorter than
/// `original/high_freq_factor` kept, and those in between interpolated smoothly.
fn scale_frequencies(inv_freq: &[f32], scaling: &RopeScaling) -> Vec<f32> {
    match scaling {
        RopeScaling::Linear { factor } => inv_freq.iter().map(|f| f / *factor as f32).collect(),
        RopeScaling::FreqFactors { factors } => inv_freq
            .iter()
            .zip(factors)
            .map(|(f, s)| f / *s as f32)
            .collect(),
        &RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_context,
        } => {
            let (factor, low, high) = (
                factor as f32,
                low_freq_factor as f32,
                high_freq_factor as f32,
            );
            let original = original_context as f32;
            let (low_freq_wavelen, high_freq_wavelen) = (original / low, original / high);
            inv_freq
                .iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen < high_freq_wavelen {
                        f
                    } else if wavelen > low_freq_wavelen {
                        f / factor
                    } else {
                        let smooth = (original / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama31_scaling_has_three_regimes() {
        // head_dim 128, θ = 500,000: values from `llama_models` apply_scaling.
        let mut config = LlamaConfig::preset("llama3.1-8b").unwrap();
        let scaled = Rope::new(&config);
        config.rope_scaling = None;
        let plain = Rope::new(&config);
        // Highest frequency (wavelength 2π) is kept.
        assert_eq!(scaled.inv_freq()[0], plain.inv_freq()[0]);
        // Lowest frequencies are divided by 8.
        let last = plain.inv_freq().len() - 1;
        let ratio = plain.inv_freq()[last] / scaled.inv_freq()[last];
        assert!((ratio - 8.0).abs() < 1e-5, "{ratio}");
        // Some frequency lies strictly between (the smooth ramp).
        assert!(plain
            .inv_freq()
            .iter()
            .zip(scaled.inv_freq())
            .any(|(p, s)| {
                let r = p / s;
                r > 1.01 && r < 7.99
            }));
    }

    /// `LlamaRotaryEmbedding(config).inv_freq` of transformers 4.57.6 for Llama 3.1/3.2
    /// scaling and plain Llama 3 (`tools/fixtures/make_rope_fixture.py`), bit for bit.
    #[test]
    fn frequencies_are_bit_identical_to_transformers() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/rope_inv_freq.json")).unwrap();
        let cases = fixture["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 4);
        for case in cases {
            let scaling = &case["rope_scaling"];
            let num = |k: &str| scaling[k].as_f64().unwrap();
            let config = LlamaConfig {
                head_dim: case["head_dim"].as_u64().unwrap() as usize,
                rope_theta: case["rope_theta"].as_f64().unwrap(),
                rope_scaling: (!scaling.is_null()).then(|| RopeScaling::Llama3 {
                    factor: num("factor"),
                    low_freq_factor: num("low_freq_factor"),
                    high_freq_factor: num("high_freq_factor"),
                    original_context: num("original_max_position_embeddings") as usize,
                }),
                ..LlamaConfig::preset("llama3.1-8b").unwrap()
            };
            let bits: Vec<u64> = Rope::new(&config)
                .inv_freq()
                .iter()
                .map(|f| u64::from(f.to_bits()))
                .collect();
            let expected: Vec<u64> = case["inv_freq_bits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap())
                .collect();
            assert_eq!(bits, expected, "{}", case["name"]);
        }
    }

    #[test]
    fn rotation_matches_the_complex_product() {
        // A rotation by angle a of (x_i, x_{i+d/2}) is multiplication by e^{ia}.
        let config = LlamaConfig {
            head_dim: 4,
            ..LlamaConfig::preset("llama3.2-1b").unwrap()
        };
        let rope = Rope::new(&config);
        let dev = Device::Cpu;
        let x = Tensor::new(&[[[[1f32, 2.0, 3.0, 4.0]]]], &dev).unwrap();
        let (cos, sin) = rope.cos_sin(&[7], 1, DType::F32, &dev).unwrap();
        let y: Vec<f32> = Rope::apply(&x, &cos, &sin)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for i in 0..2 {
            let a = 7.0 * rope.inv_freq()[i];
            let (re, im) = ([1f32, 2.0][i], [3f32, 4.0][i]);
            assert!((y[i] - (re * a.cos() - im * a.sin())).abs() < 1e-5);
            assert!((y[i + 2] - (re * a.sin() + im * a.cos())).abs() < 1e-5);
        }
    }

    /// The fused rotation's gradient equals autograd through the composed rotation (f64).
    #[test]
    fn rotation_gradient_matches_the_composed_one() {
        let dev = Device::Cpu;
        let (b, h, t, d) = (2, 3, 5, 8);
        let x = Tensor::randn(0f64, 1.0, (b, h, t, d), &dev).unwrap();
        let x = candle_core::Var::from_tensor(&x).unwrap();
        let angles = Tensor::randn(0f64, 2.0, (b, t, d / 2), &dev).unwrap();
        let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
        let fused = Rope::apply(&x, &cos, &sin).unwrap();
        let (x1, x2) = (
            x.narrow(3, 0, d / 2).unwrap(),
            x.narrow(3, d / 2, d / 2).unwrap(),
        );
        let (c, s) = (cos.unsqueeze(1).unwrap(), sin.unsqueeze(1).unwrap());
        let first = (x1.broadcast_mul(&c).unwrap() - x2.broadcast_mul(&s).unwrap()).unwrap();
        let second = (x2.broadcast_mul(&c).unwrap() + x1.broadcast_mul(&s).unwrap()).unwrap();
        let composed = Tensor::cat(&[first, second], 3).unwrap();
        let (output, gradient) = crate::kernel::check::compare(&fused, &composed, &[&x]);
        assert!(output < 1e-14 && gradient < 1e-14, "{output} {gradient}");
    }
}

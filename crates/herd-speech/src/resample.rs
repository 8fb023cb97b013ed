//! Band-limited resampling as `torchaudio.functional.resample` does it by default (windowed
//! sinc interpolation, a Hann window, 6 zero crossings, a cut-off at 0.99 of the lower
//! Nyquist frequency): the rates are reduced by their greatest common divisor to `orig` and
//! `new`, and output sample `j·new + p` is the dot product of phase `p`'s kernel with the input
//! from `j·orig − width`, the input padded with zeros on both sides; the output has
//! `⌈new · len / orig⌉` samples. Computed in f64.

/// Zero crossings of the sinc on each side (torchaudio's `lowpass_filter_width`).
const ZERO_CROSSINGS: f64 = 6.0;

/// The fraction of the lower Nyquist frequency the filter passes (torchaudio's `rolloff`).
const ROLLOFF: f64 = 0.99;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// `samples` at `from` Hz resampled to `to` Hz.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || samples.is_empty() {
        return samples.to_vec();
    }
    let divisor = gcd(u64::from(from), u64::from(to));
    let (orig, new) = (
        (u64::from(from) / divisor) as usize,
        (u64::from(to) / divisor) as usize,
    );
    let base = orig.min(new) as f64 * ROLLOFF;
    let width = (ZERO_CROSSINGS * orig as f64 / base).ceil() as usize;
    let taps = 2 * width + orig;
    // Phase p's kernel: at tap i the sinc of (i − width)/orig − p/new, scaled to base.
    let kernels: Vec<Vec<f64>> = (0..new)
        .map(|p| {
            (0..taps)
                .map(|i| {
                    let idx = (i as f64 - width as f64) / orig as f64;
                    let t = ((-(p as f64) / new as f64 + idx) * base)
                        .clamp(-ZERO_CROSSINGS, ZERO_CROSSINGS);
                    let window = (t * std::f64::consts::PI / ZERO_CROSSINGS / 2.0)
                        .cos()
                        .powi(2);
                    let t = t * std::f64::consts::PI;
                    let sinc = if t == 0.0 { 1.0 } else { t.sin() / t };
                    sinc * window * base / orig as f64
                })
                .collect()
        })
        .collect();
    let len = samples.len();
    let out_len = (new * len).div_ceil(orig);
    // Input index of padded position k (the padding is `width` zeros before the samples).
    let at = |k: usize| -> f64 {
        k.checked_sub(width)
            .and_then(|i| samples.get(i))
            .map_or(0.0, |&v| f64::from(v))
    };
    (0..out_len)
        .map(|n| {
            let (j, p) = (n / new, n % new);
            let start = j * orig;
            kernels[p]
                .iter()
                .enumerate()
                .map(|(i, w)| w * at(start + i))
                .sum::<f64>() as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_keeps_its_frequency_and_level_and_the_length_is_torchaudios() {
        let tone = |rate: u32, n: usize| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    (1000.0
                        * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / f64::from(rate)).sin())
                        as f32
                })
                .collect()
        };
        let out = resample(&tone(22_050, 22_050), 22_050, 16_000);
        assert_eq!(out.len(), 16_000);
        let want = tone(16_000, 16_000);
        // Away from the ends (where the zero padding fades the signal in and out).
        let worst = out[200..15_800]
            .iter()
            .zip(&want[200..15_800])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1.0, "{worst}");
        assert_eq!(resample(&[1.0, 2.0], 16_000, 16_000), [1.0, 2.0]);
        // ⌈8000 · 3 / 22050⌉ with the rates reduced: ⌈160 · 3 / 441⌉ = 2.
        assert_eq!(resample(&[1.0, 2.0, 3.0], 22_050, 8_000).len(), 2);
    }
}

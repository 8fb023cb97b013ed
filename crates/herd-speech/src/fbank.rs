//! Log-mel filterbank features as Kaldi computes them (`compute-fbank-feats`, and
//! `torchaudio.compliance.kaldi.fbank`, which the tests compare with): frames of 25 ms every
//! 10 ms (only whole frames, Kaldi's `snip_edges`), each with its mean removed, pre-emphasised
//! (0.97, the first sample repeated before the frame), shaped by the Povey window (a Hann
//! window to the power 0.85), zero-padded to 512 samples; the power spectrum through 80
//! triangular filters equally spaced on the mel scale (`1127 ln(1 + f/700)`) from 20 Hz to the
//! Nyquist frequency; the log of each energy, floored at f32's epsilon. Dither is off (the
//! tests need the exact numbers, and Kaldi's is random).
//!
//! The paper's encoder then reads the features normalised per utterance ([`normalize`]) and 4
//! frames stacked into one 40 ms frame ([`stack_frames`]).
//!
//! Computed in f64 (the FFT is `rustfft`'s), returned as f32. The reference is torchaudio's
//! function run in f64: run in f32, its own FFT's rounding moves weak bins of a frame with a
//! strong one by up to 3.2e-4 in the log (measured on the test's files), more than the f64
//! computations differ.

use std::sync::Arc;

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

use crate::{Error, Result};

/// Kaldi's fbank settings herd uses (Kaldi's and torchaudio's defaults but the bin count).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FbankOptions {
    /// Samples per second of the audio.
    pub sample_rate: u32,
    /// Frame length in milliseconds.
    pub frame_length_ms: f64,
    /// Frame shift in milliseconds.
    pub frame_shift_ms: f64,
    /// Mel filters.
    pub num_mel_bins: usize,
    /// Lowest frequency the filters cover, Hz.
    pub low_freq: f64,
    /// Highest frequency, Hz; 0 or below counts down from the Nyquist frequency.
    pub high_freq: f64,
    /// Pre-emphasis coefficient.
    pub preemphasis: f64,
}

impl Default for FbankOptions {
    /// The paper's features: 80 bins, 25 ms frames every 10 ms, at 16 kHz.
    fn default() -> FbankOptions {
        FbankOptions {
            sample_rate: 16_000,
            frame_length_ms: 25.0,
            frame_shift_ms: 10.0,
            num_mel_bins: 80,
            low_freq: 20.0,
            high_freq: 0.0,
            preemphasis: 0.97,
        }
    }
}

/// A filterbank ready to run: the window, the filters and the FFT of its settings.
pub struct Fbank {
    options: FbankOptions,
    /// Samples per frame and between frames.
    frame_length: usize,
    frame_shift: usize,
    /// The Povey window, one weight per sample of a frame.
    window: Vec<f64>,
    /// Per mel bin, its first FFT bin and its weights from there.
    filters: Vec<(usize, Vec<f64>)>,
    fft: Arc<dyn Fft<f64>>,
}

/// Kaldi's mel scale.
fn mel(hz: f64) -> f64 {
    1127.0 * (1.0 + hz / 700.0).ln()
}

/// The floor of an energy before its log: f32's machine epsilon, as torchaudio's.
const ENERGY_FLOOR: f64 = f32::EPSILON as f64;

impl Fbank {
    /// The filterbank of `options`; settings it cannot work with are errors naming them.
    pub fn new(options: FbankOptions) -> Result<Fbank> {
        let rate = f64::from(options.sample_rate);
        let samples = |ms: f64| (rate * ms * 0.001) as usize;
        let (frame_length, frame_shift) = (
            samples(options.frame_length_ms),
            samples(options.frame_shift_ms),
        );
        let nyquist = rate / 2.0;
        let high = match options.high_freq > 0.0 {
            true => options.high_freq,
            false => nyquist + options.high_freq,
        };
        if frame_length < 2 || frame_shift == 0 {
            return Err(Error::Features(format!(
                "frames of {} ms every {} ms at {} Hz are too short",
                options.frame_length_ms, options.frame_shift_ms, options.sample_rate
            )));
        }
        if options.num_mel_bins < 3
            || !(0.0 <= options.low_freq && options.low_freq < high)
            || high > nyquist
        {
            return Err(Error::Features(format!(
                "{} mel bins from {} Hz to {high} Hz do not fit under the Nyquist frequency \
                 ({nyquist} Hz)",
                options.num_mel_bins, options.low_freq
            )));
        }
        let padded = frame_length.next_power_of_two();
        // Hann over the frame's samples, not periodic, to the power 0.85.
        let window = (0..frame_length)
            .map(|n| {
                let a = 2.0 * std::f64::consts::PI * n as f64 / (frame_length - 1) as f64;
                (0.5 - 0.5 * a.cos()).powf(0.85)
            })
            .collect();
        // Triangles equally spaced in mel between low and high, over the FFT bins below
        // Nyquist (the Nyquist bin itself has no weight), computed in f32 in torchaudio's order:
        // its filters are f32 whatever the audio's dtype, and a small weight's rounding on a
        // strong bin moves a log energy by up to 2.6e-4.
        let (mel_low, mel_high) = (mel(options.low_freq), mel(high));
        let delta = ((mel_high - mel_low) / (options.num_mel_bins + 1) as f64) as f32;
        let (mel_low, bin_width) = (mel_low as f32, (rate / padded as f64) as f32);
        let bin_mels: Vec<f32> = (0..padded / 2)
            .map(|k| 1127.0f32 * (1.0f32 + bin_width * k as f32 / 700.0f32).ln())
            .collect();
        let filters = (0..options.num_mel_bins)
            .map(|m| {
                let m = m as f32;
                let left = mel_low + m * delta;
                let center = mel_low + (m + 1.0) * delta;
                let right = mel_low + (m + 2.0) * delta;
                let weights: Vec<f64> = bin_mels
                    .iter()
                    .map(|&f| {
                        let up = (f - left) / (center - left);
                        let down = (right - f) / (right - center);
                        f64::from(up.min(down).max(0.0))
                    })
                    .collect();
                let first = weights.iter().position(|&w| w > 0.0).unwrap_or(0);
                let last = weights.iter().rposition(|&w| w > 0.0).unwrap_or(0);
                (first, weights[first..=last.max(first)].to_vec())
            })
            .collect();
        let fft = FftPlanner::new().plan_fft_forward(padded);
        Ok(Fbank {
            options,
            frame_length,
            frame_shift,
            window,
            filters,
            fft,
        })
    }

    /// Whole frames in `samples` samples (none when shorter than one frame).
    pub fn frames(&self, samples: usize) -> usize {
        match samples >= self.frame_length {
            true => 1 + (samples - self.frame_length) / self.frame_shift,
            false => 0,
        }
    }

    /// The log-mel features of `samples` (int16-scaled, at the options' rate): one row of
    /// `num_mel_bins` values per frame, row after row.
    pub fn compute(&self, samples: &[f32]) -> Vec<f32> {
        let padded = self.fft.len();
        let preemphasis = self.options.preemphasis;
        let mut out = Vec::with_capacity(self.frames(samples.len()) * self.filters.len());
        let mut frame = vec![0.0f64; self.frame_length];
        let mut spectrum = vec![Complex::new(0.0, 0.0); padded];
        let mut power = vec![0.0f64; padded / 2];
        for f in 0..self.frames(samples.len()) {
            let start = f * self.frame_shift;
            let raw = &samples[start..start + self.frame_length];
            let mean = raw.iter().map(|&s| f64::from(s)).sum::<f64>() / raw.len() as f64;
            for (x, &s) in frame.iter_mut().zip(raw) {
                *x = f64::from(s) - mean;
            }
            // Pre-emphasis from the back, the first sample as its own predecessor.
            for i in (1..frame.len()).rev() {
                frame[i] -= preemphasis * frame[i - 1];
            }
            frame[0] -= preemphasis * frame[0];
            for (i, value) in spectrum.iter_mut().enumerate() {
                let x = match i < self.frame_length {
                    true => frame[i] * self.window[i],
                    false => 0.0,
                };
                *value = Complex::new(x, 0.0);
            }
            self.fft.process(&mut spectrum);
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            out.extend(self.filters.iter().map(|(first, weights)| {
                let energy: f64 = weights
                    .iter()
                    .zip(&power[*first..])
                    .map(|(w, p)| w * p)
                    .sum();
                energy.max(ENERGY_FLOOR).ln() as f32
            }));
        }
        out
    }
}

/// Normalises each of the `bins` columns of `features` (rows of `bins` values) to mean 0 and
/// variance 1 over the utterance (a constant column becomes 0).
pub fn normalize(features: &mut [f32], bins: usize) {
    let rows = features.len() / bins.max(1);
    if rows == 0 {
        return;
    }
    for b in 0..bins {
        let column = || features.iter().skip(b).step_by(bins).map(|&v| f64::from(v));
        let mean = column().sum::<f64>() / rows as f64;
        let variance = column().map(|v| (v - mean).powi(2)).sum::<f64>() / rows as f64;
        let scale = match variance > 0.0 {
            true => 1.0 / variance.sqrt(),
            false => 0.0,
        };
        for v in features.iter_mut().skip(b).step_by(bins) {
            *v = ((f64::from(*v) - mean) * scale) as f32;
        }
    }
}

/// Stacks every `stack` consecutive rows of `bins` values into one row of `stack · bins`
/// (the paper's 4 frames of 10 ms into one of 40 ms); a last incomplete group is completed
/// with zeros (the normalised mean), so no audio is dropped.
pub fn stack_frames(features: &[f32], bins: usize, stack: usize) -> Vec<f32> {
    let width = bins * stack.max(1);
    let mut out = features.to_vec();
    out.resize(features.len().div_ceil(width) * width, 0.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_kaldis_triangles() {
        let bank = Fbank::new(FbankOptions::default()).unwrap();
        assert_eq!(
            (bank.frame_length, bank.frame_shift, bank.fft.len()),
            (400, 160, 512)
        );
        assert_eq!(bank.filters.len(), 80);
        // Each triangle rises to at most 1 and sits above the previous one.
        let mut previous = 0;
        for (first, weights) in &bank.filters {
            assert!(weights.iter().all(|&w| (0.0..=1.0).contains(&w)));
            assert!(*first >= previous, "{first} after {previous}");
            previous = *first;
        }
        assert_eq!(bank.frames(399), 0);
        assert_eq!(bank.frames(400), 1);
        assert_eq!(bank.frames(16_000), 98);
    }

    #[test]
    fn a_tone_lights_the_bin_of_its_frequency() {
        let bank = Fbank::new(FbankOptions::default()).unwrap();
        let tone: Vec<f32> = (0..8000)
            .map(|n| {
                (10_000.0 * (2.0 * std::f64::consts::PI * 1000.0 * n as f64 / 16_000.0).sin())
                    as f32
            })
            .collect();
        let features = bank.compute(&tone);
        let row = &features[..80];
        let loudest = (0..80).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        // 1 kHz is 1127 ln(1 + 1000/700) = 999.99 mel; the bins' centres are equally spaced
        // from 20 Hz's 31.75 mel to 8 kHz's 2840.2, 34.67 mel apart: bin 27's centre is 1002.5.
        assert!((26..=28).contains(&loudest), "{loudest}");
    }

    #[test]
    fn normalized_columns_have_mean_0_and_variance_1_and_stacking_pads() {
        let mut features = vec![1.0, 5.0, 3.0, 5.0, 5.0, 5.0];
        normalize(&mut features, 2);
        assert_eq!(features[1], 0.0);
        let column: Vec<f32> = features.iter().step_by(2).copied().collect();
        let mean = column.iter().sum::<f32>() / 3.0;
        let variance = column.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 3.0;
        assert!(
            mean.abs() < 1e-6 && (variance - 1.0).abs() < 1e-5,
            "{column:?}"
        );
        let stacked = stack_frames(&[1.0; 10], 2, 4);
        assert_eq!(stacked.len(), 16);
        assert_eq!(&stacked[10..], &[0.0; 6]);
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let high = FbankOptions {
            high_freq: 9000.0,
            ..FbankOptions::default()
        };
        let err = Fbank::new(high).err().unwrap().to_string();
        assert!(err.contains("Nyquist"), "{err}");
    }
}

//! WAV files (`hound`) as the front end takes them: mono samples at 16 kHz in the int16 range
//! Kaldi's features expect (an int16 sample as its integer value; float and wider integer
//! samples scaled to it). Several channels are averaged. Other sample rates are refused by
//! name until the resampler exists.

use std::path::Path;

use crate::{Error, Result};

/// The sample rate the speech front end works at.
pub const SAMPLE_RATE: u32 = 16_000;

/// Mono audio: samples in the int16 range, and their rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    /// One sample per time step, int16-scaled.
    pub samples: Vec<f32>,
    /// Samples per second.
    pub sample_rate: u32,
}

/// Reads `path` (PCM integer of 8–32 bits, or 32-bit float) into mono int16-scaled samples.
pub fn read_wav(path: &Path) -> Result<Audio> {
    let bad = |message: String| Error::Wav {
        path: path.display().to_string(),
        message,
    };
    let mut reader = hound::WavReader::open(path).map_err(|e| bad(e.to_string()))?;
    let spec = reader.spec();
    if spec.sample_rate != SAMPLE_RATE {
        return Err(bad(format!(
            "{} Hz: herd's speech front end takes {SAMPLE_RATE} Hz (resample it first, e.g. \
             `sox in.wav -r 16000 out.wav`)",
            spec.sample_rate
        )));
    }
    let channels = usize::from(spec.channels.max(1));
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Int => {
            // An int16 sample keeps its value; other widths are scaled to int16's range.
            let scale = 2f32.powi(16 - i32::from(spec.bits_per_sample));
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<std::result::Result<_, _>>()
        }
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .map(|s| s.map(|v| v * 32_768.0))
            .collect::<std::result::Result<_, _>>(),
    }
    .map_err(|e| bad(format!("sample data: {e}")))?;
    let samples = interleaved
        .chunks(channels)
        .map(|frame| frame.iter().sum::<f32>() / frame.len() as f32)
        .collect();
    Ok(Audio {
        samples,
        sample_rate: spec.sample_rate,
    })
}

//! WAV files (`hound`) as the front end takes them: mono samples at 16 kHz in the int16 range
//! Kaldi's features expect (an int16 sample as its integer value; float and wider integer
//! samples scaled to it). Several channels are averaged; other sample rates are resampled
//! ([`crate::resample`], torchaudio's default).

use std::path::Path;

use crate::{Error, Result};

/// The sample rate the speech front end works at.
pub const SAMPLE_RATE: u32 = 16_000;

/// Mono audio at [`SAMPLE_RATE`]: samples in the int16 range, and the file's own rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    /// One sample per time step at [`SAMPLE_RATE`], int16-scaled.
    pub samples: Vec<f32>,
    /// The rate the file was recorded at (its samples resampled from it when not 16 kHz).
    pub file_rate: u32,
}

/// Reads `path` (PCM integer of 8–32 bits, or 32-bit float, at any rate) into mono
/// int16-scaled samples at [`SAMPLE_RATE`].
pub fn read_wav(path: &Path) -> Result<Audio> {
    let bad = |message: String| Error::Wav {
        path: path.display().to_string(),
        message,
    };
    let mut reader = hound::WavReader::open(path).map_err(|e| bad(e.to_string()))?;
    let spec = reader.spec();
    if spec.sample_rate == 0 {
        return Err(bad("a sample rate of 0 Hz".into()));
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
    let mono: Vec<f32> = interleaved
        .chunks(channels)
        .map(|frame| frame.iter().sum::<f32>() / frame.len() as f32)
        .collect();
    Ok(Audio {
        samples: crate::resample::resample(&mono, spec.sample_rate, SAMPLE_RATE),
        file_rate: spec.sample_rate,
    })
}

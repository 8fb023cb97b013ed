//! herd-speech: the speech side of Llama 3 (paper §8). So far its front end: [`wav`] reads
//! audio, [`resample`] brings it to 16 kHz, [`fbank`] computes the 80-bin log-mel filterbank features as Kaldi does
//! (`torchaudio.compliance.kaldi.fbank`), normalises them per utterance and stacks 4 frames
//! into one 40 ms frame, what the speech encoder reads.

pub mod fbank;
pub mod resample;
pub mod wav;

pub use fbank::{normalize, stack_frames, Fbank, FbankOptions};
pub use wav::{read_wav, Audio};

/// What goes wrong reading audio or computing its features.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A WAV file that cannot be read, or is not what the front end takes.
    #[error("{path}: {message}")]
    Wav { path: String, message: String },
    /// Audio or settings the features cannot be computed from.
    #[error("{0}")]
    Features(String),
}

/// herd-speech's result.
pub type Result<T> = std::result::Result<T, Error>;

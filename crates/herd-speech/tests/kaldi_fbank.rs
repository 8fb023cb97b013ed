//! herd-speech's features equal `torchaudio.compliance.kaldi.fbank`'s (torchaudio 2.9.1 in
//! float64, the fixture of tools/reference/kaldi_fbank_fixture.py, rounded to 5 decimals) within
//! 1e-4 on real speech WAV files: two at 16 kHz, one at 22.05 kHz that both resample first
//! (`torchaudio.functional.resample`'s defaults).

use std::path::Path;

use herd_speech::{read_wav, Fbank, FbankOptions};

#[test]
fn features_equal_torchaudios_kaldi_fbank() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let text = std::fs::read_to_string(dir.join("kaldi_fbank.json")).unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    let bank = Fbank::new(FbankOptions::default()).unwrap();
    let files = fixture["files"].as_object().unwrap();
    assert_eq!(files.len(), 3);
    for (name, want) in files {
        let audio = read_wav(&dir.join(name)).unwrap();
        let got = bank.compute(&audio.samples);
        let frames = want["frames"].as_u64().unwrap() as usize;
        assert_eq!(bank.frames(audio.samples.len()), frames, "{name}");
        let want: Vec<f64> = want["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(got.len(), want.len(), "{name}");
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (f64::from(*g) - w).abs())
            .fold(0.0, f64::max);
        println!("{name}: {frames} frames × 80 bins, largest difference {worst:.2e}");
        assert!(worst <= 1e-4, "{name}: {worst}");
    }
}

#[test]
fn broken_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let broken = dir.join("broken.wav");
    std::fs::write(&broken, b"RIFF....WAVEfmt").unwrap();
    let err = read_wav(&broken).unwrap_err().to_string();
    assert!(err.contains("broken.wav"), "{err}");
}

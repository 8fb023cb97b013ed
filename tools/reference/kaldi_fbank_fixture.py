#!/usr/bin/env python3
"""Reference log-mel features for herd-speech's front end: `torchaudio.compliance.kaldi.fbank`
(torchaudio 2.9.1, torch 2.9.1: tools/reference/requirements-speech.txt) of each given mono
int16 WAV file (resampled to 16 kHz by `torchaudio.functional.resample` first when it is not), with the settings herd uses — 80 bins, 25 ms frames every 10 ms, dither
off, the rest Kaldi's defaults (Povey window, pre-emphasis 0.97, DC offset removed, power
spectrum, 20 Hz to Nyquist). Samples are read with Python's `wave` as their int16 values, as
Kaldi reads them, and computed in float64: in float32 torchaudio's own FFT rounding moves the
weak bins of a frame with a strong one by up to 3.2e-4 in the log (the largest difference
between its f32 and f64 results here is printed to stderr).

    python tools/reference/kaldi_fbank_fixture.py crates/herd-speech/tests/fixtures/*.wav \
        > crates/herd-speech/tests/fixtures/kaldi_fbank.json

The fixture WAVs are speech synthesized by Debian's espeak-ng 1.51 (see
crates/herd-speech/tests/fixtures/README.md for the commands).
"""
import json
import os
import sys
import wave

import torch
import torchaudio


def features(path):
    with wave.open(path, "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2, path
        rate = w.getframerate()
        frames = w.readframes(w.getnframes())
    samples = torch.frombuffer(bytearray(frames), dtype=torch.int16)

    def fbank(dtype):
        x = samples.to(dtype).unsqueeze(0)
        if rate != 16000:  # torchaudio's default resampling (sinc, Hann window, 6 crossings)
            x = torchaudio.functional.resample(x, rate, 16000)
        return torchaudio.compliance.kaldi.fbank(
            x, num_mel_bins=80, frame_length=25.0, frame_shift=10.0, dither=0.0,
            sample_frequency=16000.0)

    f64 = fbank(torch.float64)
    f32 = fbank(torch.float32)
    print(f"{path}: float32 against float64, largest difference "
          f"{(f32.double() - f64).abs().max().item():.2e}", file=sys.stderr)
    return f64


def main():
    out = {"torch": torch.__version__, "torchaudio": torchaudio.__version__, "files": {}}
    for path in sys.argv[1:]:
        f = features(path)
        out["files"][os.path.basename(path)] = {
            "frames": f.shape[0], "bins": f.shape[1],
            "values": [round(v, 5) for v in f.flatten().tolist()],
        }
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()

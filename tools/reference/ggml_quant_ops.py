#!/usr/bin/env python3
"""Op-level reference for herd's Q4_1 and Q8_0 kernels, from llama.cpp's own ggml CPU library.

Calls ggml's `quantize_row_q8_1` + `ggml_vec_dot_q4_1_q8_1` and `quantize_row_q8_0` +
`ggml_vec_dot_q8_0_q8_0` (through ctypes, from the
libggml-cpu.so that tools/bench/build_llamacpp.sh builds) on seeded activations and on real rows
of SmolLM2-135M-Instruct.Q4_1.gguf, and writes what they return as a fixture for
crates/herd-model/tests/ggml_quant_ops.rs.

    python3 tools/reference/ggml_quant_ops.py --bin BIN_DIR --gguf SmolLM2-135M-Instruct.Q4_1.gguf \
        --sdist LLAMA_CPP_PYTHON_SDIST --out crates/herd-model/tests/fixtures/ggml_quant_ops.json

Needs numpy and the sdist's gguf-py (for reading the GGUF).
"""
import argparse
import ctypes
import hashlib
import json
import os
import sys

import numpy as np

# (tensor, format): Q4_1 layers and the Q8_0 token embedding (the tied output layer).
TENSORS = [("blk.0.attn_output.weight", "q4_1"), ("blk.7.ffn_down.weight", "q4_1"), ("blk.29.ffn_gate.weight", "q4_1"), ("token_embd.weight", "q8_0")]
FORMATS = {"q4_1": (20, 36, "quantize_row_q8_1", "ggml_vec_dot_q4_1_q8_1"), "q8_0": (34, 34, "quantize_row_q8_0", "ggml_vec_dot_q8_0_q8_0")}
ROWS = 6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--sdist", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    sys.path.insert(0, os.path.join(a.sdist, "vendor/llama.cpp/gguf-py"))
    import gguf

    lib = ctypes.CDLL(os.path.join(a.bin, "libggml-cpu.so"))
    lib.ggml_cpu_init()
    reader = gguf.GGUFReader(a.gguf)
    tensors = {t.name: t for t in reader.tensors}
    rng = np.random.default_rng(20261123)
    cases = []
    for name, fmt in TENSORS:
        block_bytes, act_bytes, quantize, vec_dot = FORMATS[fmt]
        t = tensors[name]
        cols = int(t.shape[0])
        row_bytes = cols // 32 * block_bytes
        data = np.array(t.data).reshape(-1).view(np.uint8)
        # Activations of realistic scale; every other block is built so that x·127/amax lands
        # exactly on .5 steps (amax = 127·2^-6), where round-half-even and round-half-away differ.
        x = (rng.standard_normal(cols) * rng.choice([0.05, 1.0, 7.0])).astype(np.float32)
        step = np.float32(2.0 ** -6)
        for b in range(0, cols // 32, 2):
            ties = (rng.integers(-126, 126, 32) + 0.5).astype(np.float32) * step
            ties[0] = np.float32(127) * step
            x[b * 32:(b + 1) * 32] = ties
        q8 = np.zeros(cols // 32 * act_bytes, dtype=np.uint8)
        getattr(lib, quantize)(x.ctypes.data_as(ctypes.c_void_p), q8.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(cols))
        dots = []
        for r in range(ROWS):
            w = np.ascontiguousarray(data[r * row_bytes:(r + 1) * row_bytes])
            s = ctypes.c_float()
            getattr(lib, vec_dot)(ctypes.c_int(cols), ctypes.byref(s), ctypes.c_size_t(0),
                                       w.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(0),
                                       q8.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(0), ctypes.c_int(1))
            dots.append(s.value)
        cases.append({
            "tensor": name,
            "format": fmt,
            "x_f32_hex": x.tobytes().hex(),
            "activations_hex": q8.tobytes().hex(),
            "rows": ROWS,
            "dots": [float(np.float32(d)) for d in dots],
        })
    gguf_sha = hashlib.sha256(open(a.gguf, "rb").read()).hexdigest()
    out = {
        "generator": "tools/reference/ggml_quant_ops.py; ggml from llama-cpp-python 0.3.36 (llama.cpp 0c1e5709), -DGGML_NATIVE=ON",
        "gguf_sha256": gguf_sha,
        "cases": cases,
    }
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()

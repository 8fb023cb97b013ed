#!/usr/bin/env python3
"""Perplexity references from llama.cpp's own `llama-perplexity`.

Runs `llama-perplexity -m MODEL -f TEXT -c CONTEXT -t 2` (the binary built by
tools/bench/build_llamacpp.sh) for each model and writes what it prints as the
final estimate, with the model file's sha256 and size, the text's sha256 and
the llama.cpp build, to a JSON fixture. herd's `herd perplexity` must agree
within 1% (../shared/design/decisions.md, quantized tolerance).

    python3 tools/reference/llamacpp_perplexity.py --bin /work/peers/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin \\
        --text crates/herd-infer/tests/fixtures/persuasion_chapter5.txt --context 256 \\
        --model ~/.cache/herd-assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --model /work/peers/models/SmolLM2-135M-Instruct.Q8_0.gguf \\
        --model /work/peers/models/SmolLM2-135M-Instruct.F16.gguf \\
        --out crates/herd-infer/tests/fixtures/llamacpp_perplexity.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="folder holding llama-perplexity")
    ap.add_argument("--text", required=True)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    exe = os.path.join(args.bin, "llama-perplexity")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True)
    results = []
    for model in args.model:
        model = os.path.expanduser(model)
        run = subprocess.run(
            [exe, "-m", model, "-f", args.text, "-c", str(args.context), "-t", "2", "-b", str(args.context)],
            capture_output=True, text=True, check=True,
        )
        log = run.stdout + run.stderr
        final = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
        chunks = [float(x) for x in re.findall(r"\[\d+\]([0-9.]+),", log)]
        results.append({
            "model": os.path.basename(model),
            "model_sha256": sha256(model),
            "model_bytes": os.path.getsize(model),
            "ppl": float(final.group(1)),
            "ppl_error": float(final.group(2)),
            "running": chunks,
        })
        print(os.path.basename(model), final.group(0))
    out = {
        "generator": "llama-perplexity " + (version.stdout + version.stderr).strip().splitlines()[0],
        "command": f"llama-perplexity -m MODEL -f {os.path.basename(args.text)} -c {args.context} -t 2 -b {args.context}",
        "text": os.path.basename(args.text),
        "text_sha256": sha256(args.text),
        "context": args.context,
        "results": results,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# side_by_side.sh — prompt processing and decode tokens/s of herd and llama.cpp on the same GGUF
# files, in the same run, 2 threads, and their ratios (docs/BENCHMARKS.md).
#
#   tools/bench/side_by_side.sh LLAMA_CPP_BIN_DIR MODEL.gguf [MODEL.gguf...]
#
# LLAMA_CPP_BIN_DIR comes from tools/bench/build_llamacpp.sh. herd must be built with
# `cargo build --release -p herd`.
set -euo pipefail
bin=$1; shift
herd="$(dirname "$0")/../../target/release/herd"
P=${P:-128}; N=${N:-64}; R=${R:-5}; T=${T:-2}
echo "| model | test | llama.cpp tok/s | herd tok/s | herd / llama.cpp |"
echo "|---|---|---|---|---|"
for m in "$@"; do
  l=$("$bin/llama-bench" -m "$m" -t "$T" -p "$P" -n "$N" -r "$R" -o json 2>/dev/null)
  h=$(RAYON_NUM_THREADS=$T "$herd" bench -m "$m" -p "$P" -n "$N" -r "$R" --json)
  python3 - "$m" "$l" "$h" "$P" "$N" <<'PY'
import json, os, sys
m, l, h, p, n = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ll = {("pp" if r["n_prompt"] else "tg"): r["avg_ts"] for r in l}
for test, key, k in (("pp", "pp", p), ("tg", "tg", n)):
    hv = h[key]["mean"]
    print(f"| {os.path.basename(m)} | {test}{k} | {ll[test]:.1f} | {hv:.1f} ± {h[key]['stdev']:.1f} | {hv / ll[test]:.2f} |")
PY
done

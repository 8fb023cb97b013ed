#!/usr/bin/env bash
# Training throughput, herd vs PyTorch, same machine, same run: the `tiny` shape (4 layers,
# d 256, vocab 8,192) at 256 tokens × 8 rows per step, f32, AdamW, 2 threads.
#   tools/bench/train_side_by_side.sh [PYTHON]   (PYTHON has torch + transformers, see
#   tools/bench/requirements-train.txt)
# herd runs the tiny recipe (its second stage is this shape) on data/tiny, made by
# tools/quickstart.sh; PyTorch runs tools/bench/train_peer.py on random tokens of the same
# shape (the arithmetic does not depend on the values).
set -euo pipefail
cd "$(dirname "$0")/../.."
python="${1:-python3}"
threads=2
cargo build --release -p herd
[[ -d data/tiny/shards ]] || { echo "run tools/quickstart.sh first (it makes data/tiny)" >&2; exit 1; }
out="$(mktemp -d)"
target/release/herd --threads $threads pretrain --recipe recipes/tiny.toml --out "$out" --max-steps 80 --quiet
herd_tps="$(python3 - "$out/metrics.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
stage = [r for r in rows if r["seq_len"] == 256][3:]  # 3 warm-up steps of the stage excluded
print(round(statistics.median(r["tokens_per_s"] for r in stage), 1),
      round(statistics.median(r["mfu"] for r in stage), 3), len(stage))
PY
)"
rm -rf "$out"
read -r tps mfu n <<<"$herd_tps"
echo "{\"peer\": \"herd\", \"shape\": \"tiny\", \"threads\": $threads, \"tokens_per_s\": $tps, \"mfu\": $mfu, \"steps\": $n}"
"$python" tools/bench/train_peer.py --shape tiny --threads $threads --steps 20
lscpu | grep -E "Model name|^CPU\(s\)"

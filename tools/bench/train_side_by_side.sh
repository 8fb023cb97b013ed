#!/usr/bin/env bash
# Training throughput, herd vs PyTorch, same machine, same run, for the `tiny` or `small`
# shape at the peer's batch (tiny: 8 × 256 tokens, small: 4 × 512), f32, AdamW, 2 threads.
#   tools/bench/train_side_by_side.sh tiny|small [PYTHON]
# PYTHON has torch + transformers (tools/bench/requirements-train.txt). herd runs
# tools/bench/recipes/<shape>.toml (tiny, small) on data/tiny (made by tools/quickstart.sh); PyTorch runs
# tools/bench/train_peer.py on random tokens of the same shape. 3 warm-up steps are excluded
# on both sides; the FLOP count is the same formula on both sides.
set -euo pipefail
cd "$(dirname "$0")/../.."
shape="${1:-tiny}"
python="${2:-python3}"
threads=2
cargo build --release -p herd
[[ -d data/tiny/shards ]] || { echo "run tools/quickstart.sh first (it makes data/tiny)" >&2; exit 1; }
out="$(mktemp -d)"
target/release/herd --threads $threads pretrain --recipe "tools/bench/recipes/$shape.toml" \
  --out "$out" --quiet 2>/dev/null
python3 - "$out/metrics.jsonl" "$shape" "$threads" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])][3:]
tps = sum(r["batch_rows"] * r["seq_len"] for r in rows) / sum(
    r["batch_rows"] * r["seq_len"] / r["tokens_per_s"] for r in rows)
print(json.dumps({"peer": "herd", "shape": sys.argv[2], "threads": int(sys.argv[3]),
                  "tokens_per_s": round(tps, 1),
                  "mfu": round(statistics.mean(r["mfu"] for r in rows), 3), "steps": len(rows)}))
PY
rm -rf "$out"
"$python" tools/bench/train_peer.py --shape "$shape" --threads $threads --steps 12
lscpu | grep -E "Model name|^CPU\(s\)"

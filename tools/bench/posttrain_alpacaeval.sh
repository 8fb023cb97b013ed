#!/usr/bin/env bash
# Post-training measurements of docs/POSTTRAINING.md: the `small` model pretrained on Gutenberg
# books (recipes/small.toml → runs/small/final) fine-tuned on the AlpacaEval pairs of
# ../shared/data/posttrain (train split), evaluated on the test split (split by prompt):
#   1. reward model from the base: held-out pairwise accuracy;
#   2. SFT on the train prompts' chosen replies;
#   3. DPO from the SFT model: held-out reward accuracy and margin before/after;
#   4. answers to a few test prompts from the base, SFT and DPO models (greedy).
# Usage: tools/bench/posttrain_alpacaeval.sh [OUT=runs/posttrain-alpacaeval] [STEPS_SCALE=1]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/posttrain-alpacaeval}
SCALE=${2:-1}
DATA=../shared/data/posttrain/alpaca-eval
TRAIN=$DATA/alpaca_eval_gpt4_pairs.train.jsonl.gz
TEST=$DATA/alpaca_eval_gpt4_pairs.test.jsonl.gz
BASE=runs/small/final
HERD=target/release/herd
[ -d "$BASE" ] || { echo "needs $BASE: herd pretrain --recipe recipes/small.toml" >&2; exit 1; }
cargo build --release -q -p herd
mkdir -p "$OUT"
common=(--seq-len 512 --eval-data "$TEST")
steps() { echo $(( $1 * SCALE / 100 > 0 ? $1 * SCALE / 100 : 1 )); }

[ -d "$OUT/rm/final" ] || /usr/bin/time -v $HERD rm train --model $BASE --data "$TRAIN" --out "$OUT/rm" \
  --steps "$(steps 6000)" --batch 16 --micro-batch 4 --lr 1e-4 "${common[@]}" 2> "$OUT/rm.log"
[ -d "$OUT/sft/final" ] || /usr/bin/time -v $HERD sft --model $BASE --data "$TRAIN" --out "$OUT/sft" \
  --steps "$(steps 3000)" --batch 16 --micro-batch 4 --lr 1e-4 "${common[@]}" 2> "$OUT/sft.log"
[ -d "$OUT/dpo/final" ] || /usr/bin/time -v $HERD dpo --model "$OUT/sft/final" --data "$TRAIN" --out "$OUT/dpo" \
  --steps "$(steps 4000)" --batch 16 --micro-batch 4 --lr 2e-5 "${common[@]}" 2> "$OUT/dpo.log"

for run in rm sft dpo; do
  echo "== $run: first and last metrics lines"
  head -1 "$OUT/$run/metrics.jsonl"; tail -1 "$OUT/$run/metrics.jsonl"
done
$HERD rm score --model "$OUT/rm/final" --data "$TEST" --seq-len 512 > "$OUT/rm-test-scores.jsonl"

python3 - "$TEST" > "$OUT/prompts.txt" <<'PY'
import gzip, json, sys
rows = [json.loads(l) for l in gzip.open(sys.argv[1])]
short = list(dict.fromkeys(r["prompt"] for r in rows if len(r["prompt"]) < 120))[:4]
print("\n".join(p.replace("\n", " ") for p in short))
PY
: > "$OUT/answers.md"
while IFS= read -r prompt; do
  echo "### $prompt" >> "$OUT/answers.md"
  for model in "$BASE" "$OUT/sft/final" "$OUT/dpo/final"; do
    echo "- **$model**: $($HERD generate --model "$model" --chat --greedy --max-tokens 60 --prompt "$prompt" 2>/dev/null | tr '\n' ' ')" >> "$OUT/answers.md"
  done
done < "$OUT/prompts.txt"
cat "$OUT/answers.md"

#!/usr/bin/env bash
# Post-training measurements of docs/POSTTRAINING.md on the AlpacaEval pairs of
# ../shared/data/posttrain (train split; evaluated on the test split, split by prompt):
#   1. reward model from the base: held-out pairwise accuracy;
#   2. SFT on the train prompts' chosen replies;
#   3. DPO from the SFT model: held-out reward accuracy and margin, before and after;
#   4. greedy answers to a few test prompts from the base, SFT and DPO models.
# Settings come from the environment (defaults: the `small` model of recipes/small.toml):
#   BASE=runs/small/final OUT=runs/posttrain-alpacaeval PAIRS=all (or N: the first N train
#   pairs) TEST_PAIRS=all RM_STEPS=60 SFT_STEPS=30 DPO_STEPS=40 BATCH=16 MICRO=4 SEQ_LEN=512
#   RM_LR=1e-4 SFT_LR=1e-4 DPO_LR=2e-5
# e.g. SmolLM2: BASE=$(herd fetch smollm2-135m-instruct-q4_1) OUT=runs/posttrain-smollm2 \
#   PAIRS=96 TEST_PAIRS=48 RM_STEPS=12 SFT_STEPS=6 DPO_STEPS=12 BATCH=8 RM_LR=1e-5 SFT_LR=1e-5 \
#   DPO_LR=1e-6 tools/bench/posttrain.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BASE=${BASE:-runs/small/final}
OUT=${OUT:-runs/posttrain-alpacaeval}
DATA=../shared/data/posttrain/alpaca-eval
HERD=target/release/herd
[ -e "$BASE" ] || { echo "needs $BASE (herd pretrain --recipe recipes/small.toml)" >&2; exit 1; }
cargo build --release -q -p herd
mkdir -p "$OUT"
subset() { # FILE N → the first N records as JSONL (all when N is "all")
  if [ "$2" = all ]; then echo "$1"; else zcat "$1" | head -n "$2" > "$OUT/$(basename "$1" .jsonl.gz).$2.jsonl"; echo "$OUT/$(basename "$1" .jsonl.gz).$2.jsonl"; fi
}
TRAIN=$(subset $DATA/alpaca_eval_gpt4_pairs.train.jsonl.gz "${PAIRS:-all}")
TEST=$(subset $DATA/alpaca_eval_gpt4_pairs.test.jsonl.gz "${TEST_PAIRS:-all}")
common=(--seq-len "${SEQ_LEN:-512}" --batch "${BATCH:-16}" --micro-batch "${MICRO:-4}" --eval-data "$TEST")
run() { # STAGE LOG ARGS… (skipped when its final model exists)
  local stage=$1; shift
  [ -d "$OUT/$stage/final" ] || /usr/bin/time -v $HERD "$@" "${common[@]}" 2> "$OUT/$stage.log"
}
run rm rm train --model "$BASE" --data "$TRAIN" --out "$OUT/rm" --steps "${RM_STEPS:-60}" --lr "${RM_LR:-1e-4}"
run sft sft --model "$BASE" --data "$TRAIN" --out "$OUT/sft" --steps "${SFT_STEPS:-30}" --lr "${SFT_LR:-1e-4}"
run dpo dpo --model "$OUT/sft/final" --data "$TRAIN" --out "$OUT/dpo" --steps "${DPO_STEPS:-40}" --lr "${DPO_LR:-2e-5}"

for stage in rm sft dpo; do
  echo "== $stage: $(grep -E '^(reward model|SFT|DPO):|left out' "$OUT/$stage.log" | tr '\n' ' ')"
  echo "   $(grep -E 'Elapsed' "$OUT/$stage.log" | sed 's/^\s*//')"
  head -1 "$OUT/$stage/metrics.jsonl"; tail -1 "$OUT/$stage/metrics.jsonl"
done
$HERD rm score --model "$OUT/rm/final" --data "$TEST" --seq-len "${SEQ_LEN:-512}" > "$OUT/rm-test-scores.jsonl"

python3 - "$DATA/alpaca_eval_gpt4_pairs.test.jsonl.gz" > "$OUT/prompts.txt" <<'PY'
import gzip, json, sys
rows = [json.loads(l) for l in gzip.open(sys.argv[1])]
short = list(dict.fromkeys(r["prompt"] for r in rows if len(r["prompt"]) < 120))[:4]
print("\n".join(p.replace("\n", " ") for p in short))
PY
: > "$OUT/answers.md"
while IFS= read -r prompt; do
  echo "### $prompt" >> "$OUT/answers.md"
  for model in "$BASE" "$OUT/sft/final" "$OUT/dpo/final"; do
    answer=$($HERD generate --model "$model" --chat --greedy --max-tokens 60 --prompt "$prompt" 2>/dev/null < /dev/null | tr '\n' ' ')
    echo "- **$model**: $answer" >> "$OUT/answers.md"
  done
done < "$OUT/prompts.txt"
cat "$OUT/answers.md"

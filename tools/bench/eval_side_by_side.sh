#!/usr/bin/env bash
# herd eval beside lm-evaluation-harness (the `hf` backend, transformers on torch, CPU, float32)
# on the same GGUF, the same task files (tasks/) and the same documents, 2 threads each, one
# after the other. Whole-command wall time (model load included) and documents per second.
#
#   tools/bench/eval_side_by_side.sh HERD_BIN MODEL.gguf DATA_DIR [TASK:LIMIT:SHOTS ...]
#
# PYTHON must have tools/reference/requirements-lm-eval.txt installed (default
# /work/venv-eval/bin/python). DATA_DIR holds the tasks' data files (../shared/data/eval).
# HARNESS_BATCH (default "1 16") lists the harness batch sizes tried; each is reported.
set -euo pipefail
HERD=$(realpath "$1") MODEL=$2 DATA=$3
shift 3
RUNS=("$@")
[ ${#RUNS[@]} -eq 0 ] && RUNS=(arc_easy:200:0 gsm8k_cot:10:8)
PY=${PYTHON:-/work/venv-eval/bin/python}
TASKS=$(cd "$(dirname "$0")/../../tasks" && pwd)
MODEL=$(realpath "$MODEL")
source "$(dirname "$0")/harness_common.sh"

for run in "${RUNS[@]}"; do
  IFS=: read -r task limit shots <<<"$run"
  for mode in dequantize quantized; do
    flag=$([ "$mode" = dequantize ] && echo --dequantize || true)
    s=$(cd "$DATA" && seconds "$HERD" eval -m "$MODEL" $flag --threads 2 --tasks "$task" \
      --num-fewshot "$shots" --limit "$limit" --quiet)
    printf '%-10s %4s docs %d-shot  herd (%s)        %7.1f s  %6.2f docs/s\n' \
      "$task" "$limit" "$shots" "$mode" "$s" "$(echo "$limit / $s" | bc -l)"
  done
  for bs in ${HARNESS_BATCH:-1 16}; do
    s=$(cd "$DATA" && seconds "$PY" -m lm_eval run --model hf \
      --model_args "pretrained=$(dirname "$MODEL")" "gguf_file=$(basename "$MODEL")" \
      dtype=float32 add_bos_token=False \
      --tasks "$task" --include_path "$TASKS" --num_fewshot "$shots" --limit "$limit" \
      --batch_size "$bs" --device cpu)
    printf '%-10s %4s docs %d-shot  lm-eval hf bs=%-3s  %7.1f s  %6.2f docs/s\n' \
      "$task" "$limit" "$shots" "$bs" "$s" "$(echo "$limit / $s" | bc -l)"
  done
done

# Shared by the lm-evaluation-harness side-by-side scripts (sourced, not run): the thread and
# offline settings, a scratch folder removed on exit, a wall-clock timer and the versions line.
# Needs PY (the harness's Python) and HERD (herd's binary) set by the caller.
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

seconds() { # command... -> wall seconds on stdout, the command's output in $OUT/log
  local start end
  start=$(date +%s.%N)
  "$@" >"$OUT/log" 2>&1 || { tail -20 "$OUT/log" >&2; return 1; }
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
echo "herd: $("$HERD" --version)"
echo "lm_eval: $("$PY" -c 'import lm_eval, importlib.metadata as m; print(m.version("lm_eval"), "transformers", m.version("transformers"), "torch", m.version("torch"))')"

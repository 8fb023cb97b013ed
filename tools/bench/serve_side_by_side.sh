#!/usr/bin/env bash
# herd serve beside llama.cpp's llama-server on the same GGUF, 2 threads each, the same load
# (tools/bench/serve_load.py) at 1, 4, 16 and 64 concurrent streams, one server at a time.
#
#   tools/bench/serve_side_by_side.sh HERD_BIN LLAMA_BIN_DIR MODEL.gguf [OUT.jsonl]
#
# LLAMA_BIN_DIR is what tools/bench/build_llamacpp.sh prints (it builds llama-server).
# PYTHON (default: the client venv tools/test.sh makes) must have aiohttp. Results: one JSON
# line per server and level in OUT.jsonl (default serve-bench.jsonl); plot them with
# tools/bench/plot_serve.py.
set -euo pipefail
HERD=$1 LLAMA=$2 MODEL=$3 OUT=${4:-serve-bench.jsonl}
PY=${PYTHON:-$(ls -d "$HOME"/.cache/herd-venvs/clients-*/bin/python | head -1)}
LEVELS=${LEVELS:-1 4 16 64}
PORT=${PORT:-8391}
HERE=$(cd "$(dirname "$0")" && pwd)
: > "$OUT"

wait_ready() {
  for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && return 0
    sleep 0.5
  done
  echo "the server did not come up" >&2
  return 1
}

run() {
  local label=$1
  shift
  if curl -s "http://127.0.0.1:$PORT/health" >/dev/null; then
    echo "port $PORT is taken by another server; stop it or set PORT" >&2
    return 1
  fi
  "$@" >"/tmp/serve-bench-$label.log" 2>&1 &
  server=$!
  trap 'kill "$server" 2>/dev/null || true' EXIT
  wait_ready
  "$PY" "$HERE/serve_load.py" --base-url "http://127.0.0.1:$PORT/v1" --levels $LEVELS \
    --label "$label" | tee -a "$OUT"
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
}

run herd "$HERD" serve --model "$MODEL" --port "$PORT" --parallel 16 --ctx-size 4096 --threads 2
[ -n "${HERD_ONLY:-}" ] || run llama.cpp "$LLAMA/llama-server" -m "$MODEL" --port "$PORT" -np 16 -c 65536 -t 2 -tb 2 \
  --cont-batching --no-webui

#!/usr/bin/env bash
# test.sh — herd's test suite: fetch the assets the tests read, then run every test.
# Beside the steering repo (../shared), its fetch script also brings llama.cpp's tokenizer test
# vectors; otherwise `herd fetch` brings the tokenizer and the GGUF, and tests whose asset is
# missing say so and skip (with CI=true they fail instead). The pinned Python clients of the
# server tests go in a venv under ~/.cache/herd-venvs (about 800 MB, made once).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f ../shared/assets/fetch.sh ]; then
  bash ../shared/assets/fetch.sh llama3-tokenizer smollm2-135m-instruct-q4_1 \
    llama-bpe-vocab-test-inp llama-bpe-vocab-test-out llamafactory-alpaca_en_demo \
    llamafactory-identity llamafactory-glaive_toolcall_en_demo llamafactory-kto_en_demo \
    llamafactory-dpo_en_demo lid.176.ftz llama3.1-8b-instruct-chat-template \
    llama3.2-3b-instruct-chat-template >/dev/null
else
  cargo run --quiet -p herd -- fetch >/dev/null
fi
# The real clients herd serve is tested against (the openai package, lm-evaluation-harness), in
# a venv pinned by tools/clients/requirements.lock and named by the lock's hash, made once.
if command -v python3 >/dev/null; then
  lock=tools/clients/requirements.lock
  venv="${HERD_VENVS:-$HOME/.cache/herd-venvs}/clients-$(sha256sum "$lock" | cut -c1-12)"
  if [ ! -f "$venv/.complete" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$lock"
    touch "$venv/.complete"
  fi
  export HERD_CLIENTS_PYTHON="$venv/bin/python"
fi
# The parallel tests run real MPI jobs (mpirun; the `mpi` features of herd and herd-parallel).
if ! command -v mpicc >/dev/null || ! command -v mpirun >/dev/null; then
  echo "test.sh: Open MPI is missing (Debian/Ubuntu: apt-get install libopenmpi-dev openmpi-bin libclang-dev pkg-config)" >&2
  exit 1
fi
cargo test --workspace --features herd/mpi,herd-parallel/mpi "$@"

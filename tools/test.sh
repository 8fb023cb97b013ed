#!/usr/bin/env bash
# test.sh — herd's test suite: fetch the assets the tests read, then run every test.
# Beside the steering repo (../shared), its fetch script also brings llama.cpp's tokenizer test
# vectors; otherwise `herd fetch` brings the tokenizer and the GGUF, and tests whose asset is
# missing say so and skip (with CI=true they fail instead).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f ../shared/assets/fetch.sh ]; then
  bash ../shared/assets/fetch.sh llama3-tokenizer smollm2-135m-instruct-q4_1 \
    llama-bpe-vocab-test-inp llama-bpe-vocab-test-out llamafactory-alpaca_en_demo \
    llamafactory-identity llamafactory-glaive_toolcall_en_demo llamafactory-kto_en_demo \
    llamafactory-dpo_en_demo lid.176.ftz >/dev/null
else
  cargo run --quiet -p herd -- fetch >/dev/null
fi
cargo test --workspace "$@"

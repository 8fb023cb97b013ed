#!/usr/bin/env bash
# Build the llama.cpp peer from the llama-cpp-python sdist on PyPI.
#
#   tools/bench/build_llamacpp.sh [DIR]        (default DIR: /work/peers)
#
# Only registry packages are used: the sdist comes from PyPI through pip,
# cmake and ninja are pip-installed if they are missing.  Idempotent: the
# download, unpack, configure and build steps are skipped / incremental when
# already done.  Progress goes to stderr; the last (only) stdout line is the
# directory holding the binaries and shared libraries, so
#
#   BIN=$(tools/bench/build_llamacpp.sh /work/peers)
#
# works.  The unpacked sdist is DIR/llama_cpp_python-$VERSION; its llama_cpp/
# package directory is used by tools/reference/llamacpp_greedy.py with
# LLAMA_CPP_LIB_PATH=$BIN.
#
# Environment: LLAMA_CPP_PYTHON_VERSION (default 0.3.36), JOBS (default 2).
set -euo pipefail

DIR=${1:-/work/peers}
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
JOBS=${JOBS:-2}
PY=${PYTHON:-python3}
TARGETS=(llama-bench llama-simple llama-quantize llama-tokenize llama-perplexity llama-server llama)

log() { echo "[build_llamacpp] $*" >&2; }

mkdir -p "$DIR/dl"
DIR=$(cd "$DIR" && pwd)
SDIST_TGZ="$DIR/dl/llama_cpp_python-$VERSION.tar.gz"
SRC="$DIR/llama_cpp_python-$VERSION"
LCPP="$SRC/vendor/llama.cpp"

# 1. Tools (from PyPI) if missing.
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v ninja >/dev/null 2>&1 || need+=(ninja)
if ((${#need[@]})); then
    log "pip install ${need[*]}"
    "$PY" -m pip install "${need[@]}" >&2
    hash -r
fi

# 2. Source distribution.
if [[ ! -f "$SDIST_TGZ" ]]; then
    log "downloading llama-cpp-python==$VERSION sdist"
    "$PY" -m pip download --no-deps --no-binary llama-cpp-python \
        "llama-cpp-python==$VERSION" -d "$DIR/dl" >&2
fi
if [[ ! -f "$LCPP/CMakeLists.txt" ]]; then
    log "unpacking $SDIST_TGZ"
    tar -xzf "$SDIST_TGZ" -C "$DIR"
fi

# 3. Configure (again when an older configuration left the server out).
cd "$LCPP"
if [[ ! -f build/build.ninja ]] || ! grep -q "LLAMA_BUILD_SERVER:BOOL=ON" build/CMakeCache.txt; then
    log "configuring $LCPP/build"
    cmake -B build -G Ninja -DGGML_NATIVE=ON -DCMAKE_BUILD_TYPE=Release \
        -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=ON >&2
fi

# 4. Build (incremental).
log "building ${TARGETS[*]} with -j $JOBS"
cmake --build build -j "$JOBS" --target "${TARGETS[@]}" >&2

BIN="$LCPP/build/bin"
for f in llama-bench llama-simple llama-quantize llama-tokenize libllama.so; do
    [[ -e "$BIN/$f" ]] || { log "missing $BIN/$f"; exit 1; }
done
echo "$BIN"

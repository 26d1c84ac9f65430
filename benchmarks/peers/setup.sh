#!/usr/bin/env bash
# Peers for benchmarks/peer_speed.py, outside the project's own install:
# a virtualenv with transformers and CTranslate2, and two builds of llama.cpp's
# benchmark tools (one tuned to this CPU, one limited to AVX2 + FMA, the
# instruction set of the t2-medium the service is meant for).
# Idempotent: whatever is already built is kept.
set -euo pipefail

BUILD=${BUILD:-build}
PYTHON=${PYTHON:-python3}
VENV=$BUILD/peers-venv
LLAMA_CPP_PYTHON=0.3.36  # its sdist carries llama.cpp's source in vendor/llama.cpp
TARGETS=(llama-bench llama-batched-bench)

if [ ! -f "$VENV/.installed" ]; then
  "$PYTHON" -m venv "$VENV"
  # torch first, so that transformers finds the CPU build and pulls no other.
  "$VENV/bin/pip" install -q torch==2.13.0
  "$VENV/bin/pip" install -q -r benchmarks/peers/requirements.txt
  touch "$VENV/.installed"
fi

SRC=$BUILD/llama-cpp-python-$LLAMA_CPP_PYTHON
if [ ! -d "$SRC/vendor/llama.cpp" ]; then
  mkdir -p "$BUILD/sdist"
  "$VENV/bin/pip" download -q --no-deps --no-binary :all: -d "$BUILD/sdist" \
    "llama-cpp-python==$LLAMA_CPP_PYTHON"
  tar -C "$BUILD" -xzf "$BUILD/sdist/llama_cpp_python-$LLAMA_CPP_PYTHON.tar.gz"
  mv "$BUILD/llama_cpp_python-$LLAMA_CPP_PYTHON" "$SRC"
fi

build_llama() {  # build_llama NAME CMAKE_OPTIONS...
  local out=$BUILD/llama.cpp-$1; shift
  if [ -x "$out/bin/llama-batched-bench" ] && [ -x "$out/bin/llama-bench" ]; then
    echo "$out: already built"; return
  fi
  cmake -S "$SRC/vendor/llama.cpp" -B "$out" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF "$@" >"$out.cmake.log"
  cmake --build "$out" -j "$(nproc)" --target "${TARGETS[@]}"
}

build_llama native -DGGML_NATIVE=ON
build_llama avx2 -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF \
  -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
echo "peers ready: $VENV, $BUILD/llama.cpp-native, $BUILD/llama.cpp-avx2"

#!/usr/bin/env bash
# Build llama-cpp-python (from its PyPI source) in a separate venv, for bench_llm.py only.
# Takes several minutes on 2 cores; never run in CI.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv-llamacpp
CMAKE_ARGS="-DGGML_NATIVE=ON" .venv-llamacpp/bin/pip install -q llama-cpp-python==0.3.36 \
  || { echo "building llama-cpp-python failed (needs gcc, cmake)" >&2; exit 1; }
echo "built: benchmarks/.venv-llamacpp"

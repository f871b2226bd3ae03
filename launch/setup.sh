#!/usr/bin/env bash
# launch/setup.sh: installs everything a fresh Debian 12 machine needs to build and run orthotron,
# then configures and builds it. Idempotent: a second run reuses the cached LibTorch and the build.
#
#   bash launch/setup.sh            # install + configure + build (build/ in the checkout)
#   ORTHOTRON_CACHE=/path ...       # where the torch virtual environment is cached (outside the checkout)
#   ORTHOTRON_SKIP_BUILD=1 ...      # install only
#   ORTHOTRON_SKIP_DATA=1 ...       # do not build the bundled corpus and tokenized dataset
set -euo pipefail

TORCH_VERSION="${ORTHOTRON_TORCH_VERSION:-2.11.0}"
CACHE="${ORTHOTRON_CACHE:-$HOME/.cache/orthotron}"
VENV="$CACHE/torch-$TORCH_VERSION"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${ORTHOTRON_BUILD_DIR:-$ROOT/build}"

log() { printf '[setup] %s\n' "$*"; }

# 1. Debian packages: Open MPI, yaml-cpp, GoogleTest, build tools, SentencePiece (library and its
#    spm_* commands), matplotlib (plots), and the documentation packages whose reStructuredText
#    sources are the bundled corpus (launch/build_corpus.py; their versions key its cache).
need_pkgs=()
for p in openmpi-bin libopenmpi-dev zlib1g-dev libyaml-cpp-dev libgtest-dev libgmock-dev nlohmann-json3-dev cmake g++ ccache clang-format clang libclang-rt-14-dev \
  pkg-config libsentencepiece-dev sentencepiece python3-matplotlib python3.11-doc linux-doc-6.1; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
if ((${#need_pkgs[@]})); then
  log "installing Debian packages: ${need_pkgs[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# 2. LibTorch from the PyPI torch wheel, in a virtual environment cached outside the checkout and
#    keyed by the pinned version. The wheel's nvidia-* dependencies come with it: libtorch_cuda.so
#    finds them through its RPATH, so the CUDA build links and loads on machines without a GPU.
if [ ! -f "$VENV/.complete" ]; then
  log "creating $VENV with torch==$TORCH_VERSION (one-time, several GiB)"
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION" numpy safetensors
  touch "$VENV/.complete"
else
  log "reusing cached torch $TORCH_VERSION at $VENV"
fi
TORCH_PREFIX="$("$VENV/bin/python" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')"

if [ "${ORTHOTRON_SKIP_BUILD:-0}" = "1" ]; then exit 0; fi

# 3. Configure and build.
JOBS="${ORTHOTRON_JOBS:-$(nproc)}"
log "configuring $BUILD (torch cmake prefix: $TORCH_PREFIX)"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE="${ORTHOTRON_BUILD_TYPE:-Release}" \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DORTHOTRON_PYTHON="$VENV/bin/python" >/dev/null
log "building with $JOBS jobs"
cmake --build "$BUILD" -j "$JOBS"
log "done: binaries in $BUILD"

# 4. The bundled corpus and its tokenized dataset (SentencePiece BPE, vocab 4096), built once and
#    cached in $CACHE (launch/prepare_data.sh; reused on later runs).
if [ "${ORTHOTRON_SKIP_DATA:-0}" != "1" ]; then
  ORTHOTRON_CACHE="$CACHE" ORTHOTRON_BUILD_DIR="$BUILD" bash "$ROOT/launch/prepare_data.sh" >/dev/null
fi

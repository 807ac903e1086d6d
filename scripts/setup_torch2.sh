#!/usr/bin/env bash
# The training core built against LibTorch 2.x, taken from PyPI's `torch`
# wheel, beside the default build on Debian's LibTorch 1.13 (see
# docs/performance.md for the comparison). Needs what scripts/setup.sh
# installs, plus python3-venv; downloads about 1 GB once.
#
#   scripts/setup_torch2.sh                 # venv in .cache/torch2-venv, build in build-torch2
#   cd build-torch2 && ctest                # the core's test suites on LibTorch 2.x
#   build-torch2/bench/bench_model          # the same benchmark on 2.x
#
# Only the torch wheel and the two small CUDA runtime libraries its CPU
# library links against are installed (--no-deps): no Python package is
# imported, and nothing here is needed by the product or CI.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TORCH_VERSION="${RLHF_TORCH2_VERSION:-2.9.1}"
VENV=.cache/torch2-venv

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
# Debian's python3 makes venvs only with python3-venv (ensurepip) installed.
if [ ! -x "$VENV/bin/pip" ] && ! dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q "install ok installed"; then
  as_root apt-get install -y -qq python3-venv
fi
[ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
# torch 2.9.1's pins for the two CUDA libraries libtorch_cpu.so needs at load time.
"$VENV/bin/pip" install -q --no-deps "torch==$TORCH_VERSION" \
  nvidia-cuda-runtime-cu12==12.8.90 nvidia-cuda-cupti-cu12==12.8.90
WHEEL="$(cd "$VENV"/lib/python3*/site-packages/torch && pwd)"

export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
export CCACHE_DIR="${CCACHE_DIR:-$ROOT/.cache/ccache}"
cmake -S . -B build-torch2 -G Ninja -DCMAKE_BUILD_TYPE=Release -DRLHF_CORE_ONLY=ON \
  -DRLHF_TORCH_WHEEL="$WHEEL" >/dev/null
cmake --build build-torch2 -j "${RLHF_BUILD_JOBS:-2}"
echo "LibTorch $TORCH_VERSION build in build-torch2 (wheel at $WHEEL)"

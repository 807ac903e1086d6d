#!/usr/bin/env bash
# The sanitizer build (CMake option RLHF_SANITIZE): everything that reads
# outside data without LibTorch, built with AddressSanitizer and UBSan into
# build-sanitize/, then its tests and the fuzz corpus replays. Tests that run
# `rlhf` use the ordinary build's (scripts/setup.sh makes it first).
# scripts/test.sh runs this after the main suite; extra arguments go to ctest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
export CCACHE_DIR="${CCACHE_DIR:-$ROOT/.cache/ccache}"
[ -x build/cli/rlhf ] || { echo "sanitize.sh: build/cli/rlhf is missing; run scripts/setup.sh first" >&2; exit 2; }
cmake -S . -B build-sanitize -G Ninja -DRLHF_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS=-O1 \
  -DRLHF_CLI_FOR_TESTS="$ROOT/build/cli/rlhf" >/dev/null
cmake --build build-sanitize -j "${RLHF_BUILD_JOBS:-2}"
# Any report fails the test that caused it.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
cd build-sanitize
exec ctest --output-on-failure "$@"

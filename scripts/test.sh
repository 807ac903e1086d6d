#!/usr/bin/env bash
# Quick start, part 2: set up (packages, data, build) and run every test:
# the main suite, then the sanitizer build (ASan + UBSan over everything that
# reads outside data without LibTorch, and the fuzz corpus replays).
# Extra arguments go to both ctest runs, e.g. `scripts/test.sh -L fast`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RLHF_TEST_DEPS=1 scripts/setup.sh
# One test binary at a time: each uses every core for LibTorch.
(cd build && ctest --output-on-failure "$@")
exec scripts/sanitize.sh "$@"

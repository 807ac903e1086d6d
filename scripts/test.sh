#!/usr/bin/env bash
# Quick start, part 2: set up (packages, data, build) and run every test.
# Extra arguments go to ctest, e.g. `scripts/test.sh -L fast`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RLHF_TEST_DEPS=1 scripts/setup.sh
cd build
# One test binary at a time: each uses every core for LibTorch.
exec ctest --output-on-failure "$@"

#!/usr/bin/env bash
# Quick start, part 1: set up (packages, data, build) and run the main job on
# the built-in default data. Extra arguments go to the job as overrides.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
exec build/cli/rlhf pipeline --config configs/demo.toml "$@"

#!/usr/bin/env bash
# Label-budget learning curves: the reward model's gold accuracy on held-out
# prompts after 1k, 2k, 4k, 8k and 16k simulated labels, random selection
# against active strategies, each on its own copy of one label store (same
# candidates, same first random round, same rater noise).
#
#   scripts/label_curve.sh BASE OUT [STRATEGY...] [-- extra rlhf active settings]
#
# BASE is a pipeline folder with sft/ and labels.sqlite holding queued,
# unlabelled comparisons, e.g. from
#   build/cli/rlhf pipeline --config configs/demo.toml --out_dir=BASE --stages=pretrain,sft,candidates
# Strategies default to "random uncertainty"; random should come first (it
# is the baseline of the summary line).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RLHF="${RLHF:-$ROOT/build/cli/rlhf}"
[ $# -ge 2 ] || { sed -n 2,16p "$0"; exit 2; }
base=$1 out=$2
shift 2
strategies=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do strategies+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#strategies[@]} -gt 0 ] || strategies=(random uncertainty)
[ -f "$base/labels.sqlite" ] || { echo "no $base/labels.sqlite: run the pipeline's candidates stage first" >&2; exit 1; }
mkdir -p "$out"
dirs=()
for s in "${strategies[@]}"; do
  dir="$out/$s"
  mkdir -p "$dir"
  # A copy of the store, once (a rerun resumes the loop on its copy).
  if [ ! -f "$dir/labels.sqlite" ]; then
    cp "$base/labels.sqlite" "$dir/labels.sqlite"
    for ext in -wal -shm; do [ -f "$base/labels.sqlite$ext" ] && cp "$base/labels.sqlite$ext" "$dir/labels.sqlite$ext"; done
  fi
  echo "== $s"
  extra=()
  [ "$s" = disagreement ] && extra+=(--ensemble=2)
  start=$(date +%s)
  "$RLHF" active --config "$ROOT/configs/active.toml" --db="$dir/labels.sqlite" --out_dir="$dir" --strategy="$s" \
    --rm.init_from="$base/sft" "${extra[@]}" "$@" > "$dir/log" 2>&1 || { tail -20 "$dir/log" >&2; exit 1; }
  tail -7 "$dir/log"
  echo "$s: $(( $(date +%s) - start )) s"
  dirs+=("$dir")
done
"$RLHF" curves "${dirs[@]}"

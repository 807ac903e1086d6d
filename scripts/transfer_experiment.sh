#!/usr/bin/env bash
# Transfer learning, measured: SFT from the pretrained checkpoint versus SFT
# from a random initialisation of the same architecture and tokenizer, with
# the same data, steps and seed. Prints both validation-loss curves.
#
#   scripts/transfer_experiment.sh [PRETRAINED_RUN] [OUT]
#   (default: runs/demo/pretrain from `rlhf pipeline --config configs/demo.toml`)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PRE="${1:-runs/demo/pretrain}"
OUT="${2:-runs/transfer}"
COMMON=(--config configs/sft.toml --init_from="$PRE" --train.epochs=2 --train.eval_interval=25
        --train.checkpoint_interval=0 --sample.count=0)
build/cli/rlhf sft "${COMMON[@]}" --out_dir="$OUT/pretrained"
build/cli/rlhf sft "${COMMON[@]}" --out_dir="$OUT/random" --random_init=true
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
def curve(run):
    rows = [json.loads(l) for l in open(f"{out}/{run}/metrics.jsonl")]
    return {r["step"]: r["loss/val"] for r in rows if "loss/val" in r}
a, b = curve("pretrained"), curve("random")
print("| step | val loss, pretrained start | val loss, random start |")
print("|---:|---:|---:|")
for s in sorted(a):
    print(f"| {s} | {a[s]:.3f} | {b.get(s, float('nan')):.3f} |")
PY

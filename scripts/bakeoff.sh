#!/usr/bin/env bash
# The algorithm bake-off of docs/results.md: from one SFT model, one set of
# simulated labels and one reward model, PPO, DPO,
# robust DPO, GRPO and RLOO, then all five and SFT compared on the 240
# held-out prompts (gold win rates with 95% intervals, KL from SFT, length).
# About an hour on a 2-core CPU. Usage: scripts/bakeoff.sh [OUT_DIR] [overrides...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-runs/bakeoff}
shift || true
scripts/setup.sh
rlhf=build/cli/rlhf
# Every stage but the robust DPO variant, in one pipeline run (resumable).
"$rlhf" pipeline --config configs/demo.toml --out_dir="$out" \
  --stages=pretrain,sft,candidates,label,rm,ppo,dpo,grpo,rloo,compare "$@"
# Robust DPO (unbiased under a known flip rate), from the same SFT model and
# labels, with the DPO stage's other settings: best-vs-worst pairs pooled
# from the labels (rarely flipped, so a small assumed rate) and RPO.
"$rlhf" dpo --config configs/dpo.toml --policy="$out/sft" --data.preferences="$out/labels.sqlite" \
  --out_dir="$out/dpo-robust" --dpo.loss_type=robust --dpo.label_smoothing=0.05 --dpo.rpo_alpha=1 \
  --data.pairs=best_vs_worst --train.max_steps=135 --train.eval_interval=135
# All of them on the held-out prompts.
"$rlhf" compare "$out/ppo" "$out/dpo" "$out/dpo-robust" "$out/grpo" "$out/rloo" "$out/sft" \
  --names ppo dpo robust-dpo grpo rloo sft --reward-model "$out/rm" --reference "$out/sft" \
  --out "$out/bakeoff-compare"
"$rlhf" pipeline --report "$out"

#!/usr/bin/env python3
"""How much of a policy's gold win rate survives the stricter gold judge.

Scores the replies of an `rlhf compare` run with the current rubric
(`rlhf gold --out`) and with the first-round rubric, which is the same score
without the three findings added later (wrong product -3, garbled -4, wrong
action -3; docs/rubric.md), and prints mean gold and the head-to-head win
rate (ties half, bootstrap 95% interval) under each. Standard library only.

  scripts/judge_shift.py runs/demo/compare data/support/heldout_prompts.jsonl [A B]
"""
import json
import os
import random
import subprocess
import sys
import tempfile

NEW_PENALTIES = {"wrong_product": 3.0, "garbled": 4.0, "wrong_action": 3.0}


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    compare_dir, prompts_path = sys.argv[1], sys.argv[2]
    rlhf = os.environ.get("RLHF", "build/cli/rlhf")
    prompts = [json.loads(line) for line in open(prompts_path) if line.strip()]
    rows = [json.loads(line) for line in open(os.path.join(compare_dir, "replies.jsonl")) if line.strip()]
    names = list(rows[0]["replies"].keys())
    a, b = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else (names[0], names[1])
    samples = len(rows) // len(prompts) if len(rows) >= len(prompts) else 1
    scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in (a, b):
            src, out = os.path.join(tmp, name + ".jsonl"), os.path.join(tmp, name + ".scored.jsonl")
            with open(src, "w") as f:
                for i, row in enumerate(rows):
                    reply = row["replies"][name]
                    meta = prompts[i // samples].get("metadata", {})
                    f.write(json.dumps({"prompt": row["prompt"], "response": reply["response"],
                                        "finished": reply["finished"], "metadata": meta}) + "\n")
            subprocess.run([rlhf, "gold", src, "--out", out], check=True, stdout=subprocess.DEVNULL)
            new, old, hits = [], [], {k: 0 for k in NEW_PENALTIES}
            for line in open(out):
                g = json.loads(line)["gold"]
                new.append(g["total"])
                old.append(g["total"] + sum(p for k, p in NEW_PENALTIES.items() if g.get(k)))
                for k in NEW_PENALTIES:
                    hits[k] += bool(g.get(k))
            scores[name] = {"new": new, "old": old, "hits": hits}

    def win_rate(x, y):
        return sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in zip(x, y)) / len(x)

    def interval(x, y, reps=2000, seed=2024):
        rng, n, rates = random.Random(seed), len(x), []
        for _ in range(reps):
            idx = [rng.randrange(n) for _ in range(n)]
            rates.append(win_rate([x[i] for i in idx], [y[i] for i in idx]))
        rates.sort()
        return rates[int(0.025 * reps)], rates[int(0.975 * reps) - 1]

    n = len(rows)
    print(f"{n} replies each; {a} vs {b}")
    print("| judge | mean gold " + a + " | mean gold " + b + " | " + a + " wins | 95% interval |")
    print("|---|---:|---:|---:|---|")
    for judge, label in (("old", "first-round rubric"), ("new", "stricter rubric")):
        x, y = scores[a][judge], scores[b][judge]
        lo, hi = interval(x, y)
        print(f"| {label} | {sum(x) / n:.2f} | {sum(y) / n:.2f} | {100 * win_rate(x, y):.1f}% | "
              f"[{100 * lo:.1f}%, {100 * hi:.1f}%] |")
    for name in (a, b):
        h = scores[name]["hits"]
        print(f"{name}: " + ", ".join(f"{k} {100 * v / n:.1f}%" for k, v in h.items()))


if __name__ == "__main__":
    main()

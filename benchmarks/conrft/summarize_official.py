"""Collect run_official.sh's runs (ConRFT in the official regime on pick-place-v3) into official/results.csv (variant,
seed, stage, step, key, value; stage 1: Stage I's evaluations by gradient step, stage 2: Stage II's by env step;
variant: "official", or the VARIANT of a Stage II variant, e.g. "_eta0.01"), then official/results.md: success per seed
and mean over seeds at every evaluation, with the intervention rate, the training episodes' success and the mean Q of
the policy's actions in Stage II (per 2.5k env steps), for the official run and each variant.

    python benchmarks/conrft/summarize_official.py              (after run_official.sh; DIR defaults to official/)
    python benchmarks/conrft/summarize_official.py --from-csv   (re-make results.md from the committed results.csv)
    python benchmarks/conrft/summarize_official.py --dir DIR
"""
import csv
import os
import sys
from collections import defaultdict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from runs_io import read_runs  # noqa: E402

KEYS = ("eval/success", "eval/return", "offline/eval_success", "charts/intervention_rate", "charts/success",
        "charts/q_policy")


def main():
    folder = sys.argv[sys.argv.index("--dir") + 1] if "--dir" in sys.argv else os.path.join(HERE, "official")
    path = os.path.join(folder, "results.csv")
    if "--from-csv" in sys.argv:
        with open(path) as f:
            rows = [(v, int(s), int(g), int(st), k, float(x)) for v, s, g, st, k, x in list(csv.reader(f))[1:]]
    else:
        rows = [("official" if a["exp_name"] in ("official", "stage1_official") else a["exp_name"][len("official"):],
                 a["seed"], 2 if a["stage_one"] else 1, step, key, value)
                for a, step, key, value in read_runs(folder, KEYS)
                if a["exp_name"].startswith("official") or a["exp_name"] == "stage1_official"]
        with open(path, "w", newline="") as out:
            w = csv.writer(out)
            w.writerow(["variant", "seed", "stage", "step", "key", "value"])
            w.writerows(rows)
    curves = defaultdict(dict)  # (variant, stage, key) -> {seed: {step: value}}
    for variant, seed, stage, step, key, value in rows:
        curves[(variant, stage, key)].setdefault(seed, {})[step] = value
    seeds = sorted({r[1] for r in rows})
    variants = ["official"] + sorted({r[0] for r in rows} - {"official"})
    lines = []
    tables = [(1, "offline/eval_success", "Stage I (gradient steps), evaluation success"),
              (1, "eval/success", "After Stage I (the Stage I run's last evaluation, logged at step 0)"),
              (2, "eval/success", "Stage II (env steps), evaluation success (10 episodes)"),
              (2, "charts/intervention_rate", "Stage II, intervention rate"),
              (2, "charts/success", "Stage II, training episodes' success"),
              (2, "charts/q_policy", "Stage II, mean Q of the policy's actions (+10 is the largest return)")]
    for variant, stage, key, title in [("official", *t) for t in tables] + [
            (v, *t) for v in variants[1:] for t in tables if t[0] == 2]:
        per_seed = curves.get((variant, stage, key))
        if not per_seed:
            continue
        steps = sorted({s for c in per_seed.values() for s in c})
        if key.startswith("charts/"):  # per episode / per step / every 1k: mean per 2.5k
            per_seed = {sd: {b: np.mean([v for s, v in c.items() if b - 2500 < s <= b]) for b in range(2500, -(
                -max(steps) // 2500) * 2500 + 1, 2500)} for sd, c in per_seed.items()}
            steps = sorted({s for c in per_seed.values() for s in c})
        name = "" if variant == "official" else f"variant {variant}: "
        lines += [f"{name}{title} ({key})", "", "| step | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
                  "|---|" + "---|" * (len(seeds) + 1)]
        for step in steps:
            vals = [per_seed.get(s, {}).get(step, np.nan) for s in seeds]
            lines.append(f"| {step} | " + " | ".join(f"{v:.2f}" for v in vals) + f" | {np.nanmean(vals):.2f} |")
        lines.append("")
    table = "\n".join(lines)
    with open(os.path.join(folder, "results.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()

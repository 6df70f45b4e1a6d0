"""Collect small_eta/runs (run.sh) into results.csv (exp_name, seed, step, key, value) and print, per exp-name, the
evaluation success per seed at each evaluation (step 0 = after Stage I, consistency BC) and the share of online
episodes that succeed per 5k window. With no runs it leaves results.csv as it is.

    python benchmarks/conrft/small_eta/summarize.py
"""
import csv
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from runs_io import read_runs  # noqa: E402

rows = [{"exp_name": a["exp_name"], "seed": a["seed"], "step": step, "key": key, "value": value} for a, step, key, value
        in read_runs(HERE, ("eval/success", "charts/success", "charts/intervention_rate", "charts/q_policy"))]
out = os.path.join(HERE, "results.csv")
if rows:
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["exp_name", "seed", "step", "key", "value"])
        w.writeheader()
        w.writerows(rows)
if not os.path.exists(out):
    raise SystemExit("No finished runs under small_eta/runs and no results.csv: run small_eta/run.sh first.")
with open(out) as f:
    rows = list(csv.DictReader(f))
for exp in sorted({r["exp_name"] for r in rows}):
    mine = [r for r in rows if r["exp_name"] == exp]
    seeds = sorted({int(r["seed"]) for r in mine})
    ev = {(int(r["seed"]), int(r["step"])): float(r["value"]) for r in mine if r["key"] == "eval/success"}
    steps = sorted({s for _, s in ev})
    print(f"\n{exp}: eval/success (10 episodes) per seed, mean\n")
    print("| step | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |\n|---" + "|---" * (len(seeds) + 1) + "|")
    for t in steps:
        v = [ev.get((s, t), np.nan) for s in seeds]
        print(f"| {t} | " + " | ".join(f"{x:.1f}" for x in v) + f" | {np.nanmean(v):.2f} |")
    print(f"\n{exp}: online episodes that succeed (charts/success), per 5k window, all seeds\n")
    print("| window | episodes | succeed | intervention rate |\n|---|---|---|---|")
    for lo in range(0, max(steps) if steps else 0, 5000):
        ep = [float(r["value"]) for r in mine if r["key"] == "charts/success" and lo <= int(r["step"]) < lo + 5000]
        ir = [float(r["value"]) for r in mine
              if r["key"] == "charts/intervention_rate" and lo < int(r["step"]) <= lo + 5000]
        print(f"| {lo // 1000}-{lo // 1000 + 5}k | {len(ep)} | {int(sum(ep))} | {np.mean(ir) if ir else np.nan:.2f} |")

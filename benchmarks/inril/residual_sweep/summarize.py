"""runs/ of run.sh -> results.csv (every evaluation) and results.md (BC start, final and best eval/return per setting).

    python benchmarks/inril/residual_sweep/summarize.py [--from-csv]
"""
import csv
import os
import sys
from collections import defaultdict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from runs_io import read_runs  # noqa: E402


def main():
    path = os.path.join(HERE, "results.csv")
    if "--from-csv" not in sys.argv:
        rows = [(a["exp_name"], a["residual_scale"], a["residual_log_std"], a["residual_l2"], a["seed"], step, v)
                for a, step, _, v in read_runs(HERE, ("eval/return",))]
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["setting", "residual_scale", "residual_log_std", "residual_l2", "seed", "step", "eval_return"])
            w.writerows(sorted(rows))
    runs = defaultdict(list)
    with open(path) as f:
        for r in csv.DictReader(f):
            runs[(r["setting"], r["residual_scale"], r["residual_log_std"], r["residual_l2"], r["seed"])].append(
                (int(r["step"]), float(r["eval_return"])))
    table = defaultdict(list)
    for (name, scale, logstd, l2, seed), ev in runs.items():
        ev.sort()
        table[(name, scale, logstd, l2)].append((ev[0][1], ev[-1][1], max(v for _, v in ev), ev[-1][0], seed))
    lines = ["| setting | scale | action std | L2 | seeds | BC start | final eval/return | best eval/return | steps |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (name, scale, logstd, l2), rs in sorted(table.items(), key=lambda kv: float(kv[0][1]) * 10 + float(kv[0][2])):
        start, final, best, steps, seeds = zip(*rs)
        std = float(scale) * np.exp(float(logstd))
        lines.append(f"| {name} | {scale} | {std:.3f} | {l2} | {','.join(seeds)} | {np.mean(start):.0f} | "
                     f"{np.mean(final):.0f} +- {np.std(final):.0f} ({', '.join(f'{v:.0f}' for v in final)}) | "
                     f"{np.mean(best):.0f} | {max(steps)} |")
    open(os.path.join(HERE, "results.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Collect the GRAPE lite runs into results.csv (long format: variant, seed, iteration, key, value), then results.md
(success on the training and held-out tasks after every iteration, mean +- std over seeds) and plot.png.

    python benchmarks/grape/summarize.py             (run.sh calls it at the end)
    python benchmarks/grape/summarize.py --from-csv  (re-make the table and plot from the committed results.csv)
"""
import csv
import glob
import os
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = ("grape", "tpo-success", "step-dpo")
KEEP = ("eval/", "charts/sample_success", "charts/pairs", "charts/pairs_success_vs_failure", "charts/r_ext",
        "charts/mean_shift_from_ref")


def collect():
    rows = []
    for f in sorted(glob.glob(os.path.join(HERE, "runs", "*", "metrics.csv"))):
        _, variant, seed, _ = os.path.basename(os.path.dirname(f)).split("__")
        with open(f) as fh:
            for step, key, value in list(csv.reader(fh))[1:]:
                if key.startswith(KEEP):
                    rows.append((variant, int(seed), int(step), key, float(value)))
    with open(os.path.join(HERE, "results.csv"), "w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["variant", "seed", "iteration", "key", "value"])
        w.writerows(rows)
    return rows


def load():
    with open(os.path.join(HERE, "results.csv")) as f:
        return [(v, int(s), int(i), k, float(x)) for v, s, i, k, x in list(csv.reader(f))[1:]]


def main():
    rows = load() if "--from-csv" in sys.argv else collect()
    by = defaultdict(list)
    for variant, _seed, it, key, value in rows:
        by[(variant, it, key)].append(value)
    variants = [v for v in VARIANTS if any(k[0] == v for k in by)]
    iters = sorted({k[1] for k in by if k[2] == "eval/success_train"})
    ms = lambda xs: f"{np.mean(xs):.2f} +- {np.std(xs):.2f}" if xs else "-"  # noqa: E731
    tasks = sorted({k[2][len("eval/success/"):] for k in by if k[2].startswith("eval/success/")})
    lines = ["Budget (benchmarks/grape/run.sh): grape_tpo.py defaults (SFT 3000 steps on 10 demos per training task; "
             "per iteration 4 starts x 4 rollouts per training task, top-1 / bottom-1 pair per start, 10 TPO epochs), "
             "success = mean over the split's tasks of 10 deterministic 500-step episodes per task; iteration 0 is the "
             "SFT start (the same model for every variant of a seed); mean +- std over seeds.", "",
             "| variant | iteration | seeds | training tasks | held-out tasks | rollouts that succeed | pairs (success vs "
             "failure) | mean abs action shift from pi_ref |", "|---|---|---|---|---|---|---|---|"]
    for v in variants:
        for it in iters:
            tr, ho = by.get((v, it, "eval/success_train"), []), by.get((v, it, "eval/success_heldout"), [])
            if not tr:
                continue
            pairs, sf = by.get((v, it, "charts/pairs"), []), by.get((v, it, "charts/pairs_success_vs_failure"), [])
            lines.append(f"| {v} | {it} | {len(tr)} | {ms(tr)} | {ms(ho)} | {ms(by.get((v, it, 'charts/sample_success'), []))} | "
                         + (f"{np.mean(pairs):.1f} ({np.mean(sf):.1f}) |" if pairs else "- |")
                         + f" {ms(by.get((v, it, 'charts/mean_shift_from_ref'), []))} |")
    lines += ["", "Per task, last iteration (mean over seeds):", "",
              "| variant | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for v in variants:
        for it in (iters[0], iters[-1]):
            lines.append(f"| {v} (iteration {it}) | " + " | ".join(
                f"{np.mean(by[(v, it, f'eval/success/{t}')]):.2f}" if by.get((v, it, f"eval/success/{t}")) else "-"
                for t in tasks) + " |")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for v in variants:
        for ax, split, title in zip(axes, ("train", "heldout"), ("training tasks", "held-out tasks")):
            xs = [it for it in iters if by.get((v, it, f"eval/success_{split}"))]
            ys = [np.mean(by[(v, it, f"eval/success_{split}")]) for it in xs]
            es = [np.std(by[(v, it, f"eval/success_{split}")]) for it in xs]
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=v)
            ax.set_title(title)
            ax.set_xlabel("iteration (0: SFT start)")
            ax.set_ylabel("success rate")
            ax.set_ylim(-0.05, 1.05)
            ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "plot.png"), dpi=100)
    text = "\n".join(lines)
    with open(os.path.join(HERE, "results.md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

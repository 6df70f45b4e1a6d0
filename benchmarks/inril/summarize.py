"""Collect eval/return from runs/*/metrics.csv into results.csv, then write results.md (table) and plot.png.

    python benchmarks/inril/summarize.py            (run.sh calls it at the end)
    python benchmarks/inril/summarize.py --from-csv (re-make the table and plot from the committed results.csv)
"""
import csv
import glob
import os
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
LABELS = {("inril_residual", "interleave"): "IN-RIL residual", ("inril_pcgrad", "interleave"): "IN-RIL pcgrad",
          ("inril_pcgrad", "none"): "RL-only", ("inril_pcgrad", "regularize"): "RL + BC reg.",
          ("inril_residual_dyn", "interleave"): "IN-RIL residual, dynamic m"}
BUDGETS = (100_000, 200_000, 300_000)
EARLY = 100_000


DIAG = ("losses/demo_mse", "losses/il", "charts/rho", "charts/conflict_rate", "charts/m")


def collect():
    """runs/*/metrics.csv -> results.csv (eval/return) and diagnostics.csv (demo MSE, rho, conflict rate, m)."""
    rows, diag = [], []
    for f in sorted(glob.glob(os.path.join(HERE, "runs", "*", "metrics.csv"))):
        env, file, mode, seed, _ = os.path.basename(os.path.dirname(f)).split("__")
        with open(f) as fh:
            for step, key, value in list(csv.reader(fh))[1:]:
                if key == "eval/return":
                    rows.append((env, LABELS[(file, mode)], int(seed), int(step), float(value)))
                elif key in DIAG:
                    diag.append((env, LABELS[(file, mode)], int(seed), int(step), key, float(value)))
    for name, header, data in (("results.csv", ["env", "variant", "seed", "step", "eval_return"], rows),
                               ("diagnostics.csv", ["env", "variant", "seed", "step", "key", "value"], diag)):
        with open(os.path.join(HERE, name), "w", newline="") as out:
            w = csv.writer(out)
            w.writerow(header)
            w.writerows(data)
    return rows, diag


def load():
    with open(os.path.join(HERE, "results.csv")) as f:
        rows = [(e, v, int(s), int(st), float(r)) for e, v, s, st, r in list(csv.reader(f))[1:]]
    with open(os.path.join(HERE, "diagnostics.csv")) as f:
        diag = [(e, v, int(s), int(st), k, float(x)) for e, v, s, st, k, x in list(csv.reader(f))[1:]]
    return rows, diag


def diagnostics_table(diag):
    """Per env and variant, mean over seeds: demo MSE of the acting policy (first, max, last), the IL loss of the
    interleaved IL steps (first -> last; for the residual file: the base's), mean rho, conflict rate, mean m."""
    by = defaultdict(list)
    for env, variant, seed, step, key, value in diag:
        by[(env, variant, key, seed)].append((step, value))
    lines = ["| env | variant | demo MSE first -> max -> last | IL loss first -> last | mean rho | conflict rate | mean m |",
             "|---|---|---|---|---|---|---|"]
    for env, variant in sorted({(k[0], k[1]) for k in by}):
        def per_seed(key, fn):
            vals = [fn([v for _, v in sorted(by[k])]) for k in by if k[:3] == (env, variant, key)]
            return f"{np.mean(vals):.3g}" if vals else "-"
        mse = " -> ".join(per_seed("losses/demo_mse", fn) for fn in (lambda v: v[0], max, lambda v: v[-1]))
        il = " -> ".join(per_seed("losses/il", fn) for fn in (lambda v: v[0], lambda v: v[-1]))
        lines.append(f"| {env} | {variant} | {mse} | {il} | {per_seed('charts/rho', np.mean)} | "
                     f"{per_seed('charts/conflict_rate', lambda v: v[-1])} | {per_seed('charts/m', np.mean)} |")
    return "\n".join(lines)


def at(curve, step):
    """Return at the last evaluation at or before `step` (evaluations every 20k steps; the final one at the end)."""
    pts = [r for s, r in curve if s <= step]
    return pts[-1] if pts else np.nan


def main():
    rows, diag = load() if "--from-csv" in sys.argv else collect()
    runs = defaultdict(list)
    for env, variant, seed, step, ret in rows:
        runs[(env, variant, seed)].append((step, ret))
    envs = sorted({k[0] for k in runs})
    variants = [v for v in LABELS.values() if any(k[1] == v for k in runs)]
    ms = lambda xs: f"{np.mean(xs):.0f} +- {np.std(xs):.0f}"  # noqa: E731
    lines = ["| env | variant | seeds | BC start | worst eval in first 100k | " + " | ".join(f"at {b // 1000}k" for b in BUDGETS)
             + " | final |", "|---|---|---|---|---|" + "---|" * len(BUDGETS) + "---|"]
    fig, axes = plt.subplots(1, len(envs), figsize=(6 * len(envs), 4), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for variant in variants:
            curves = [sorted(runs[k]) for k in sorted(runs) if k[0] == env and k[1] == variant]
            if not curves:
                continue
            start = [c[0][1] for c in curves]
            worst = [min(r for s, r in c if 0 < s <= EARLY) for c in curves]
            final = [c[-1][1] for c in curves]
            lines.append(f"| {env} | {variant} | {len(curves)} | {ms(start)} | {ms(worst)} | "
                         + " | ".join(ms([at(c, b) for c in curves]) for b in BUDGETS) + f" | {ms(final)} |")
            steps = sorted({s for c in curves for s, _ in c})
            mat = np.array([[at(c, s) for s in steps] for c in curves])
            mean, std = np.nanmean(mat, 0), np.nanstd(mat, 0)
            ax.plot(steps, mean, label=variant)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set_title(f"{env} (from medium demos)")
        ax.set_xlabel("env steps of fine-tuning")
        ax.set_ylabel("eval/return (5 deterministic episodes)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "plot.png"), dpi=100)
    table = "\n".join(lines) + "\n\nDiagnostics (mean over seeds):\n\n" + diagnostics_table(diag)
    with open(os.path.join(HERE, "results.md"), "w") as f:
        f.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()

"""Collect the finished runs of run.sh (locomotion) or run_metaworld.sh (sparse-reward MetaWorld) into CSVs, then
write a table (results.md) and plot.png. Runs are labelled by their --exp-name (the variant names of the scripts).

    python benchmarks/inril/summarize.py                        (run.sh calls it: runs/ -> results.csv,
                                                                 diagnostics.csv, results.md, plot.png here)
    python benchmarks/inril/summarize.py --metaworld DIR        (run_metaworld.sh calls it: DIR/runs/ ->
                                                                 DIR/results.csv in long format, results.md, plot.png)
    python benchmarks/inril/summarize.py --dir DIR              (the same for DIR/runs/ -> DIR/results.csv, ...;
                                                                 residual_defaults/ was made so)
    add --from-csv to either to re-make the table and plot from the committed CSVs
"""
import csv
import os
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from runs_io import read_runs  # noqa: E402

# --exp-name of each variant in run.sh / run_metaworld.sh -> label
LABELS = {"rl_only": "RL-only", "bc_reg": "RL + BC reg.", "pcgrad_m10": "IN-RIL pcgrad",
          "pcgrad_m10_noproj": "IN-RIL pcgrad, no step projection",
          "pcgrad_dyn": "IN-RIL pcgrad, dynamic m", "res_rl_only": "residual RL-only",
          "res_bc_reg": "residual + BC reg.", "residual_m10": "IN-RIL residual",
          "residual_dyn": "IN-RIL residual, dynamic m"}
BUDGETS = (100_000, 200_000, 300_000)
EARLY = 100_000


DIAG = ("losses/demo_mse", "losses/il", "losses/il_mse", "charts/rho", "charts/conflict_rate",
        "charts/step_conflict_rate", "charts/m")


def collect():
    """runs/*/metrics.csv -> results.csv (eval/return) and diagnostics.csv (demo MSE, rho, conflict rate, m)."""
    rows, diag = [], []
    for a, step, key, value in read_runs(HERE, ("eval/return",) + DIAG):
        env, variant, seed = a["env_id"], LABELS[a["exp_name"]], a["seed"]
        if key == "eval/return":
            rows.append((env, variant, seed, step, value))
        else:
            diag.append((env, variant, seed, step, key, value))
    fresh = {r[:3] for r in rows}
    for name, header, data in (("results.csv", ["env", "variant", "seed", "step", "eval_return"], rows),
                               ("diagnostics.csv", ["env", "variant", "seed", "step", "key", "value"], diag)):
        if os.path.exists(os.path.join(HERE, name)):  # keep the committed rows of (env, variant, seed) not run again
            with open(os.path.join(HERE, name)) as f:
                data += [(e, v, int(s), int(st), *[float(x) if i == len(r) - 1 else x for i, x in enumerate(r)])
                         for e, v, s, st, *r in list(csv.reader(f))[1:] if (e, v, int(s)) not in fresh]
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
    """Per env and variant, mean over seeds: demo MSE of the acting policy (first, max, last), the IL loss and its
    squared error of the interleaved IL steps (first -> last; for the residual file: the base's), mean rho, mean
    conflict rates (per rollout: PCGrad on the gradients, projection of the applied step), mean m."""
    by = defaultdict(list)
    for env, variant, seed, step, key, value in diag:
        by[(env, variant, key, seed)].append((step, value))
    lines = ["| env | variant | demo MSE first -> max -> last | IL loss first -> last | IL MSE first -> last | "
             "mean rho | conflict rate | step conflict rate | mean m |", "|---|---|---|---|---|---|---|---|---|"]
    for env, variant in sorted({(k[0], k[1]) for k in by}):
        def per_seed(key, fn):
            vals = [fn([v for _, v in sorted(by[k])]) for k in by if k[:3] == (env, variant, key)]
            return f"{np.mean(vals):.3g}" if vals else "-"
        mse = " -> ".join(per_seed("losses/demo_mse", fn) for fn in (lambda v: v[0], max, lambda v: v[-1]))
        il, il_mse = (" -> ".join(per_seed(key, fn) for fn in (lambda v: v[0], lambda v: v[-1]))
                      for key in ("losses/il", "losses/il_mse"))
        lines.append(f"| {env} | {variant} | {mse} | {il} | {il_mse} | {per_seed('charts/rho', np.mean)} | "
                     f"{per_seed('charts/conflict_rate', np.mean)} | "
                     f"{per_seed('charts/step_conflict_rate', np.mean)} | {per_seed('charts/m', np.mean)} |")
    return "\n".join(lines)


def at(curve, step):
    """Return at the last evaluation at or before `step` (evaluations every 20k steps; the final one at the end)."""
    pts = [r for s, r in curve if s <= step]
    return pts[-1] if pts else np.nan


def main():
    global HERE
    if "--dir" in sys.argv:  # locomotion runs in another folder (run.sh's outputs copied there)
        HERE = os.path.abspath(sys.argv[sys.argv.index("--dir") + 1])
    if "--metaworld" in sys.argv:
        return metaworld(sys.argv[sys.argv.index("--metaworld") + 1])
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


MW_KEYS = ("eval/success", "eval/return", "charts/rho", "charts/rho_bar", "charts/m", "losses/demo_mse",
           "losses/il_mse", "charts/conflict_rate", "charts/step_conflict_rate", "charts/residual_magnitude",
           "charts/action_std")
MW_EARLY, MW_MID = 30_000, 50_000


def metaworld(folder):
    """DIR/runs -> DIR/results.csv (env, variant, seed, step, key, value), then DIR/results.md and DIR/plot.png:
    success, rho and m(t) over env steps, mean +- std over seeds, one column per task."""
    path = os.path.join(folder, "results.csv")
    if "--from-csv" in sys.argv:
        with open(path) as f:
            rows = [(e, v, int(s), int(st), k, float(x)) for e, v, s, st, k, x in list(csv.reader(f))[1:]]
    else:
        rows = [(a["env_id"], LABELS[a["exp_name"]], a["seed"], step, key, value)
                for a, step, key, value in read_runs(folder, MW_KEYS)]
        if os.path.exists(path):  # keep the committed rows of (task, variant, seed) not run again (runs over sessions)
            fresh = {r[:3] for r in rows}
            with open(path) as f:
                rows += [(e, v, int(s), int(st), k, float(x)) for e, v, s, st, k, x in list(csv.reader(f))[1:]
                         if (e, v, int(s)) not in fresh]
        with open(path, "w", newline="") as out:
            w = csv.writer(out)
            w.writerow(["env", "variant", "seed", "step", "key", "value"])
            w.writerows(rows)
    curves = defaultdict(list)  # (env, variant, key, seed) -> [(step, value)]
    for env, variant, seed, step, key, value in rows:
        curves[(env, variant, key, seed)].append((step, value))
    envs = sorted({k[0] for k in curves})
    variants = [v for v in LABELS.values() if any(k[1] == v for k in curves)]
    ms = lambda xs, f="{:.2f}": (f + " +- " + f).format(np.mean(xs), np.std(xs)) if xs else "-"  # noqa: E731

    def per_seed(env, variant, key):
        return [sorted(curves[k]) for k in sorted(curves) if k[:3] == (env, variant, key)]

    long = max(r[3] for r in rows) > 300_000  # the 1M-step benchmark: success at 250k and 500k instead
    early, mid = (250_000, 500_000) if long else (MW_EARLY, MW_MID)
    cols = "at 250k | at 500k" if long else "worst in first 30k | at 50k"
    last = " mean of the last 5 evaluations |" if long else ""  # 800k-1M: less noisy than the final 10 episodes
    lines = [f"| task | variant | seeds | BC start | {cols} | final |{last} mean m | mean rho | step conflict rate |",
             "|---|---|---|---|---|---|---|---|---|---|" + "---|" * bool(long)]
    fig, axes = plt.subplots(3, len(envs), figsize=(6 * len(envs), 10), squeeze=False)
    for j, env in enumerate(envs):
        for variant in variants:
            succ = per_seed(env, variant, "eval/success")
            if not succ:
                continue
            m = [np.mean([v for _, v in c]) for c in per_seed(env, variant, "charts/m")]
            rho = [np.mean([v for _, v in c]) for c in per_seed(env, variant, "charts/rho")]
            scr = [np.mean([v for _, v in c]) for c in per_seed(env, variant, "charts/step_conflict_rate")]
            lines.append(f"| {env} | {variant} | {len(succ)} | {ms([c[0][1] for c in succ])} | "
                         f"{ms([at(c, early) if long else min(v for s, v in c if s <= early) for c in succ])} | "
                         f"{ms([at(c, mid) for c in succ])} | {ms([c[-1][1] for c in succ])} | "
                         + (f"{ms([np.mean([v for _, v in c[-5:]]) for c in succ])} | " if long else "") +
                         f"{ms(m, '{:.1f}')} | {ms(rho)} | {ms(scr)} |")
            for i, key in enumerate(("eval/success", "charts/rho", "charts/m")):
                cs = per_seed(env, variant, key)
                if not cs:
                    continue
                steps = sorted({s for c in cs for s, _ in c})
                mat = np.array([[at(c, s) for s in steps] for c in cs])
                mean, std = np.nanmean(mat, 0), np.nanstd(mat, 0)
                color = f"C{list(LABELS.values()).index(variant)}"  # one colour per variant in every panel
                axes[i][j].plot(steps, mean, label=variant, color=color)
                axes[i][j].fill_between(steps, mean - std, mean + std, alpha=0.15, color=color)
        for i, ylabel in enumerate(("eval/success (10 episodes)", "rho = cos(grad L_IL, grad L_RL)", "m(t)")):
            axes[i][j].set_ylabel(ylabel)
            axes[i][j].set_xlabel("env steps of fine-tuning")
        axes[0][j].set_title(f"{env}, sparse reward")
        for i in range(3):
            axes[i][j].legend(fontsize=7)
    if long:  # per seed, in seed order: BC start, final, mean of the last 5, first evaluation at 0.5 or more
        lines += ["", "| task | variant | seeds | BC start | final | last five | first evaluation at 0.5 or more |",
                  "|---|---|---|---|---|---|---|"]
        first = lambda c: next((f"{s // 1000}k" for s, v in c if s > 0 and v >= 0.5), "never")  # noqa: E731
        for env in envs:
            for variant in variants:
                succ = per_seed(env, variant, "eval/success")
                cell = lambda f: ", ".join(f(c) for c in succ)  # noqa: E731
                if succ:
                    lines.append(f"| {env} | {variant} | {len(succ)} | {cell(lambda c: f'{c[0][1]:.1f}')} | "
                                 f"{cell(lambda c: f'{c[-1][1]:.1f}')} | "
                                 f"{cell(lambda c: f'{np.mean([v for _, v in c[-5:]]):.2f}')} | {cell(first)} |")
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "plot.png"), dpi=100)
    table = "\n".join(lines)
    with open(os.path.join(folder, "results.md"), "w") as f:
        f.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()

"""Collect the ConRFT / SAC fine-tuning / consistency-BC runs into results.csv, then results.md and plot.png (one
table and one plot panel per task), with the BC references of bc_reference.csv.

    python benchmarks/conrft/summarize.py             (after run.sh; keeps the committed rows of every (task, algo,
                                                       seed) whose run is not under runs/, e.g. ConRFT's when only
                                                       the SAC rows are run again)
    python benchmarks/conrft/summarize.py --from-csv  (re-make the tables and plot from the committed results.csv)
With no finished run and no results.csv, results.md holds the BC references alone.
"""
import csv
import os
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from runs_io import read_runs  # noqa: E402

KEYS = ("eval/success", "eval/return", "offline/eval_success", "charts/intervention_rate", "charts/success",
        "charts/q_policy")
ALGOS = ("conrft", "sac", "bc-only")


def collect():
    rows = [(a["env_id"], a["algo"], a["seed"], step, key, value) for a, step, key, value in read_runs(HERE, KEYS)]
    if os.path.exists(os.path.join(HERE, "results.csv")):  # keep the committed (task, algo, seed) not run again
        fresh = {r[:3] for r in rows}
        rows += [r for r in load() if r[:3] not in fresh]
    if rows:
        with open(os.path.join(HERE, "results.csv"), "w", newline="") as out:
            w = csv.writer(out)
            w.writerow(["env", "algo", "seed", "step", "key", "value"])
            w.writerows(rows)
    return rows


def load():
    with open(os.path.join(HERE, "results.csv")) as f:
        return [(e, al, int(s), int(st), k, float(v)) for e, al, s, st, k, v in list(csv.reader(f))[1:]]


def bc_references():
    """{env: {policy: [success per seed]}} from bc_reference.csv."""
    refs = defaultdict(lambda: defaultdict(list))
    path = os.path.join(HERE, "bc_reference.csv")
    if os.path.exists(path):
        with open(path) as f:
            for r in csv.DictReader(f):
                refs[r["env"]][r["policy"]].append(float(r["eval_success"]))
    return refs


def pct(xs):
    return f"{100 * np.mean(xs):.0f}% +- {100 * np.std(xs):.0f}" if len(xs) else "-"


def main():
    rows = load() if "--from-csv" in sys.argv else collect()
    runs = defaultdict(lambda: defaultdict(dict))
    for env, algo, seed, step, key, value in rows:
        runs[(env, algo, seed)][key][step] = value
    refs = bc_references()
    envs = sorted({k[0] for k in runs})
    out = []
    fig, axes = plt.subplots(1, max(len(envs), 1), figsize=(6 * max(len(envs), 1), 4), squeeze=False)
    for env, ax in zip(envs, axes[0]):
        steps = sorted({s for k, r in runs.items() if k[0] == env for s in r["eval/success"]})
        out += [f"{env}: eval/success (10 episodes), mean +- std over seeds (percentage points). Step 0 = after "
                "Stage I; then Stage II env steps (offline steps, batch, Cal-QL actions and interventions as run.sh "
                "was run). Consistency BC alone is ConRFT's step 0 (Stage I has eta 0).", "",
                "| algo | seeds | " + " | ".join("after Stage I" if s == 0 else f"{s / 1000:g}k online" for s in steps)
                + " | intervention rate (mean over Stage II) |", "|---|---|" + "---|" * len(steps) + "---|"]
        for algo in ALGOS:
            keys = [k for k in sorted(runs) if k[:2] == (env, algo)]
            if not keys:
                continue
            mat = np.array([[runs[k]["eval/success"].get(s, np.nan) for s in steps] for k in keys])
            cells = [pct(mat[:, j][~np.isnan(mat[:, j])]) for j in range(len(steps))]
            rate = [np.mean(list(runs[k]["charts/intervention_rate"].values())) for k in keys
                    if runs[k]["charts/intervention_rate"]]
            out.append(f"| {algo} | {len(keys)} | " + " | ".join(cells) + f" | {pct(rate) if rate else '-'} |")
            if algo == "bc-only":
                ax.axhline(np.nanmean(mat[:, 0]), color="gray", ls="--", label="consistency BC alone")
                continue
            mean, std = np.nanmean(mat, 0), np.nanstd(mat, 0)
            ax.plot(steps, mean, marker="o", label=algo)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        if refs.get(env, {}).get("gaussian-mse"):
            ax.axhline(np.mean(refs[env]["gaussian-mse"]), color="black", ls=":",
                       label="Gaussian MSE BC (bc_reference.py)")
        ax.set_title(f"{env}: eval/success (0 = after Stage I)")
        ax.set_xlabel("Stage II env steps")
        ax.legend()
        out.append("")
    out += ["BC references (bc_reference.py: 4,000 steps, batch 128, LayerNorm-tanh networks, 10 evaluation episodes "
            "per seed), success mean +- std over seeds:", "",
            "| task | BC policy | seeds | success |", "|---|---|---|---|"]
    out += [f"| {env} | {k} | {len(v)} | {pct(v)} |" for env in sorted(refs) for k, v in refs[env].items()]
    path = os.path.join(HERE, "bc_trunk_ablation.csv")  # consistency BC with other trunks (bc_trunk_ablation.py)
    if os.path.exists(path):
        abl = defaultdict(list)
        with open(path) as f:
            for r in csv.DictReader(f):
                abl[(r["variant"], int(r["steps"]), int(r["batch"]), r["eval"])].append(float(r["eval_success"]))
        out += ["", "Consistency BC on pick-place-v3 by trunk (bc_trunk_ablation.py; tanh-sin = conrft.py; the tanh-sin "
                "rows at 4,000 x 128 are bc_reference.py's consistency rows), success mean +- std over seeds:", "",
                "| trunk | steps x batch | evaluation from | seeds | success |", "|---|---|---|---|---|"]
        ref = refs.get("metaworld/pick-place-v3", {})
        for name, ev in (("consistency", "z~N(0,I)"), ("consistency-z0", "z=0")):
            if ref.get(name):
                abl[("tanh-sin", 4000, 128, ev)] = ref[name]
        out += [f"| {v} | {s} x {b} | {ev} | {len(x)} | {pct(x)} |" for (v, s, b, ev), x in sorted(abl.items())]
    if envs:
        fig.tight_layout()
        fig.savefig(os.path.join(HERE, "plot.png"), dpi=100)
    text = "\n".join(out)
    with open(os.path.join(HERE, "results.md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

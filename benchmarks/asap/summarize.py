"""Collect the ASAP runs into results.csv (one row per run and metric), then results.md (tables) and plot.png.

    python benchmarks/asap/summarize.py             (run.sh calls it at the end)
    python benchmarks/asap/summarize.py --from-csv  (re-make the tables and plot from the committed results.csv)
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
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
KEYS = ("eval/return", "eval/train_sim_return", "eval/sim_return", "tracking/sim_error", "tracking/sim_delta_error",
        "tracking/sysid_error", "tracking/sim_angle_error", "tracking/sim_delta_angle_error", "tracking/sysid_angle_error",
        "sysid/mass_scale", "sysid/friction_scale", "sysid/gear_scale", "sysid/rounds", "sysid/converged")


def gap_name(a):
    parts = [f"{n} x{a[k]:g}" for n, k in (("mass", "mass_scale"), ("friction", "friction_scale"), ("gear", "gear_scale")) if a[k] != 1]
    parts += [f"delay {a['action_delay']}"] if a["action_delay"] else []
    parts += [f"dead zone {a['dead_zone']:g}"] if a.get("dead_zone") else []
    parts += [f"saturation {a['saturation']:g}"] if a.get("saturation", 1.0) != 1.0 else []
    parts += [f"low-pass {a['action_lowpass']:g}"] if a.get("action_lowpass") else []
    return ", ".join(parts) or "none"


def collect():
    rows = []
    for d in sorted(glob.glob(os.path.join(HERE, "runs", "*"))):
        if not os.path.exists(os.path.join(d, "model.pt")):
            continue
        a = torch.load(os.path.join(d, "model.pt"), weights_only=False)["args"]
        with open(os.path.join(d, "metrics.csv")) as f:
            for step, key, value in list(csv.reader(f))[1:]:
                if key in KEYS:
                    rows.append((gap_name(a), a["method"], a["seed"], int(step), key, float(value)))
    new_gaps = {r[0] for r in rows}  # keep the committed rows of the gaps not run this time
    if os.path.exists(os.path.join(HERE, "results.csv")):
        rows = [r for r in load() if r[0] not in new_gaps] + rows
    with open(os.path.join(HERE, "results.csv"), "w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["gap", "method", "seed", "step", "key", "value"])
        w.writerows(rows)
    return rows


def load():
    with open(os.path.join(HERE, "results.csv")) as f:
        return [(g, m, int(s), int(st), k, float(v)) for g, m, s, st, k, v in list(csv.reader(f))[1:]]


def main():
    rows = load() if "--from-csv" in sys.argv else collect()
    runs = defaultdict(lambda: defaultdict(list))
    for gap, method, seed, step, key, value in rows:
        runs[(gap, method, seed)][key].append((step, value))
    gaps = sorted({k[0] for k in runs})
    ms = lambda xs: f"{np.mean(xs):.4g} +- {np.std(xs):.3g}" if xs else "-"  # noqa: E731

    def vals(gap, method, key, pick):
        return [pick(sorted(r[key])) for k, r in runs.items() if k[0] == gap and k[1] == method and r.get(key)]

    def first(v):
        return v[0][1]

    out = ["Budget per run: Hopper-v4, 10 + 3 held-out real episodes, delta model 100k PPO env steps (10-step horizon, "
           "error reward), SysID coordinate search on a 13-point log grid until a round changes nothing (>= 4 rounds), "
           "policy fine-tuning 200k PPO env steps; seeds as in the tables (benchmarks/asap/run.sh).", "",
           "Open-loop tracking error on held-out real trajectories (10 steps from real states; state error, and mean "
           "joint angle error in rad), mean +- std over seeds:", "",
           "| gap | sim | sim + delta (ASAP) | SysID sim | joint angle: sim / sim + delta / SysID "
           "| SysID scales (mass, friction, gear) | SysID rounds (converged) |",
           "|---|---|---|---|---|---|---|"]
    for gap in gaps:
        sim = vals(gap, "asap", "tracking/sim_error", first) + vals(gap, "sysid", "tracking/sim_error", first)
        pairs = (("asap", "tracking/sim_angle_error"), ("asap", "tracking/sim_delta_angle_error"),
                 ("sysid", "tracking/sysid_angle_error"))
        ang = " / ".join(ms(vals(gap, m, k, first)) for m, k in pairs)
        sc = ", ".join(ms(vals(gap, "sysid", f"sysid/{n}_scale", first)) for n in ("mass", "friction", "gear"))
        rounds = ", ".join(f"{r:g}" for r in vals(gap, "sysid", "sysid/rounds", first))
        conv = sum(vals(gap, "sysid", "sysid/converged", first))
        out.append(f"| {gap} | {ms(sim)} | {ms(vals(gap, 'asap', 'tracking/sim_delta_error', first))} | "
                   f"{ms(vals(gap, 'sysid', 'tracking/sysid_error', first))} | {ang} | {sc} | {rounds} ({conv:g} converged) |")
    out += ["", "Real return (5 deterministic episodes), mean +- std over seeds. 'in its sim' is the pre-trained policy's "
            "return in the sim the method fine-tunes in (a good alignment makes it close to the real return before "
            "fine-tuning):", "", "| gap | method | seeds | sim return | real return before (direct transfer) | pre-trained in its sim | "
            "real return after fine-tuning |", "|---|---|---|---|---|---|---|"]
    cols = min(3, len(gaps))
    fig, axes = plt.subplots(-(-len(gaps) // cols), cols, figsize=(6 * cols, 4 * -(-len(gaps) // cols)), squeeze=False)
    for ax in axes.flat[len(gaps):]:
        ax.axis("off")
    for ax, gap in zip(axes.flat, gaps):
        for method in ("finetune-sim", "sysid", "asap"):
            curves = [sorted(r["eval/return"]) for k, r in sorted(runs.items()) if k[0] == gap and k[1] == method]
            if not curves:
                continue
            out.append(f"| {gap} | {method} | {len(curves)} | {ms(vals(gap, method, 'eval/sim_return', first))} | "
                       f"{ms([c[0][1] for c in curves])} | {ms(vals(gap, method, 'eval/train_sim_return', first))} | "
                       f"{ms([c[-1][1] for c in curves])} |")
            steps = sorted({s for c in curves for s, _ in c})
            mat = np.array([[dict(c).get(s, np.nan) for s in steps] for c in curves])
            mean, std = np.nanmean(mat, 0), np.nanstd(mat, 0)
            ax.plot(steps, mean, marker="o", label=method)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set_title(f"Hopper-v4, real = sim with {gap}")
        ax.set_xlabel("env steps of policy fine-tuning")
        ax.set_ylabel("real eval/return")
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "plot.png"), dpi=100)
    text = "\n".join(out)
    with open(os.path.join(HERE, "results.md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

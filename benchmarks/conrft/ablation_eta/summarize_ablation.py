"""Collect the eta/beta ablation runs of this folder (see README.md) into results.csv (run, step, key, value)
and print eval/success and the mean Q of the policy's actions per run."""
import csv
import glob
import os

HERE = os.path.dirname(os.path.abspath(__file__))
rows = []
for d in sorted(glob.glob(os.path.join(HERE, "runs", "*"))):
    name = os.path.basename(d).split("__")[1]
    with open(os.path.join(d, "metrics.csv")) as f:
        for r in csv.DictReader(f):
            if r["key"] in ("eval/success", "offline/eval_success", "charts/q_policy", "charts/success"):
                rows.append((name, int(r["step"]), r["key"], float(r["value"])))
with open(os.path.join(HERE, "results.csv"), "w", newline="") as out:
    csv.writer(out).writerows([("run", "step", "key", "value")] + rows)
for name in sorted({r[0] for r in rows}):
    for key in ("eval/success", "charts/q_policy"):
        print(name, key, " ".join(f"{s}:{v:.2f}" for n, s, k, v in rows if n == name and k == key))

"""Collect the run of this folder (README.md) into results.csv (step, key, value) and print its evaluations (Stage I:
offline/eval_success at gradient steps; Stage II: eval/success at env steps, 0 = after Stage I) and charts/q_policy."""
import csv
import glob
import os

HERE = os.path.dirname(os.path.abspath(__file__))
KEYS = ("offline/eval_success", "eval/success", "charts/q_policy", "charts/success", "offline/td", "offline/cql_diff")
rows = []
for d in sorted(glob.glob(os.path.join(HERE, "runs", "*"))):
    with open(os.path.join(d, "metrics.csv")) as f:
        rows += [(int(r["step"]), r["key"], float(r["value"])) for r in csv.DictReader(f) if r["key"] in KEYS]
with open(os.path.join(HERE, "results.csv"), "w", newline="") as out:
    csv.writer(out).writerows([("step", "key", "value")] + rows)
for key in KEYS:
    print(key, " ".join(f"{s}:{v:.2f}" for s, k, v in rows if k == key))

"""Collect the runs of this folder (README.md) into results.csv (seed, run, step, key, value) and print their
evaluations (Stage I: offline/eval_success at gradient steps; Stage II: eval/success at env steps, 0 = after Stage I)
and charts/q_policy. run: conrft = Stage I and Stage II in one run (seed 2); stage1 = Stage I alone (stage_one/runs,
seed 1); online30k = Stage II from that checkpoint. A run still going is read as far as its metrics.csv goes."""
import csv
import glob
import os

HERE = os.path.dirname(os.path.abspath(__file__))
KEYS = ("offline/eval_success", "eval/success", "charts/q_policy", "charts/success", "offline/td", "offline/cql_diff")
rows = []
for d in sorted(glob.glob(os.path.join(HERE, "runs", "*")) + glob.glob(os.path.join(HERE, "stage_one", "runs", "*"))):
    _, run, _, seed, _ = os.path.basename(d).split("__")  # env__exp-name__algo__seed__time
    with open(os.path.join(d, "metrics.csv")) as f:
        rows += [(int(seed), run, int(r["step"]), r["key"], float(r["value"])) for r in csv.DictReader(f)
                 if r["key"] in KEYS]
with open(os.path.join(HERE, "results.csv"), "w", newline="") as out:
    csv.writer(out).writerows([("seed", "run", "step", "key", "value")] + rows)
for seed, run in sorted({(s, r) for s, r, *_ in rows}):
    for key in KEYS:
        vals = [(st, v) for s, r, st, k, v in rows if (s, r, k) == (seed, run, key)]
        if vals:
            print(f"seed {seed} {run} {key}:", " ".join(f"{st}:{v:.2f}" for st, v in vals))

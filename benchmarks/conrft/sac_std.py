"""The SAC baseline's exploration noise after Stage I: for every SAC Stage I checkpoint under stage_one/runs, the
actor's pre-tanh std on the states of its task's demos (median and 10th / 90th percentile over states and action
dimensions). Before commit 128b382 the log-std head got no gradient in Stage I and kept about 0.86 (issue 26's audit).
Writes sac_std.csv and prints a table.

    python benchmarks/conrft/sac_std.py
"""
import csv
import glob
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
import conrft as C  # noqa: E402

rows = []
for path in sorted(glob.glob(os.path.join(HERE, "stage_one", "runs", "*__stage1__sac__*", "model.pt"))):
    ckpt = torch.load(path, weights_only=False)
    a = ckpt["args"]
    task = a["env_id"].split("/", 1)[1]
    demos = np.load(os.path.join(ROOT, "data", f"metaworld-{task}.npz"))
    obs = torch.as_tensor(demos["observations"], dtype=torch.float32)
    actor = C.GaussianActor(obs.shape[1], demos["actions"].shape[1], a["hidden"])
    actor.load_state_dict(ckpt["policy"])
    with torch.no_grad():
        std = actor.dist(obs).stddev.flatten()
    rows.append({"task": task, "seed": a["seed"], "offline_steps": a["offline_steps"],
                 "std_median": round(std.median().item(), 3), "std_q10": round(std.quantile(0.1).item(), 3),
                 "std_q90": round(std.quantile(0.9).item(), 3)})
with open(os.path.join(HERE, "sac_std.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
print("| " + " | ".join(rows[0]) + " |\n" + "|---" * len(rows[0]) + "|")
for r in rows:
    print("| " + " | ".join(str(v) for v in r.values()) + " |")

"""Where to put run.sh's --intervene-gap (1.5): roll out the 4k-step Stage I consistency policies of pick-place seeds 1
and 2 (stage_one/runs, made by run.sh) for 4 episodes each and measure, at every step, the L1 gap between the
policy's action and the scripted expert's (MetaWorld's SawyerPickPlaceV3Policy, clipped to [-1, 1]). Writes
gap_calibration.csv (one row per episode: success, length, gap percentiles, first step with a gap above 1.5).

    python benchmarks/conrft/gap_calibration.py
"""
import csv
import glob
import os
import sys

import metaworld.policies as P
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
import conrft as C  # noqa: E402

torch.set_num_threads(1)
torch.manual_seed(0)
rows = []
for seed in (1, 2):
    path = glob.glob(os.path.join(HERE, "stage_one", "runs", f"*pick-place-v3__stage1__conrft__{seed}__*", "model.pt"))[0]
    ckpt = torch.load(path, weights_only=False)
    a = ckpt["args"]
    env = C.make_env("metaworld/pick-place-v3", 100 + seed)()
    policy = C.ConsistencyPolicy(env.observation_space.shape[0], env.action_space.shape[0], a["hidden"],
                                 a["sigma_min"], a["sigma_max"], a["sigma_data"])
    policy.load_state_dict(ckpt["policy"])
    expert = P.SawyerPickPlaceV3Policy()
    for ep in range(4):
        obs, _ = env.reset()
        gaps, done = [], False
        while not done:
            with torch.no_grad():
                act = policy.sample(torch.as_tensor(obs, dtype=torch.float32)[None], ckpt["sigmas"], 1)[0].numpy()
            gaps.append(float(np.abs(act - np.clip(expert.get_action(obs), -1, 1)).sum()))
            obs, _, term, trunc, info = env.step(act)
            done = term or trunc
        g = np.array(gaps)
        p50, p90, p99 = np.percentile(g, [50, 90, 99])
        rows.append({"stage_one_seed": seed, "episode": ep, "success": float(info["success"]), "length": len(g),
                     "gap_p50": round(float(p50), 3), "gap_p90": round(float(p90), 3), "gap_p99": round(float(p99), 3),
                     "gap_max": round(float(g.max()), 3), "first_step_gap_above_1.5": int(np.argmax(g > 1.5)) if (g > 1.5).any()
                     else -1})
        print(rows[-1])
with open(os.path.join(HERE, "gap_calibration.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)

"""What Stage II did to the policy and critic: for every finished run under runs/ and corrections/runs/ and the
Stage I checkpoint it started from (args["stage_one"]), on the run's 20 demo episodes' states: the policy's action
error against the demo actions, the share of action coordinates at the box edge (|a| > 0.99), and that checkpoint's
critic's mean Q (ensemble mean) of the demo actions, of the policy's actions and of uniform random actions (how much
the critic tells actions apart), beside the demos' mean Monte-Carlo return. Writes diagnostics.csv (keeping its
committed rows of every (task, algo, variant, seed) whose run is not here); prints a table.
With --dir official: the same for run_official.sh's Stage II runs (official/runs, state embeddings, 100-step
episodes) into official/diagnostics.csv.

    python benchmarks/conrft/diagnose.py
    python benchmarks/conrft/diagnose.py --dir official
"""
import csv
import glob
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
import conrft as C  # noqa: E402


def nets(path, obs_dim, act_dim):
    ckpt = torch.load(path, weights_only=False)
    a = ckpt["args"]
    if a["algo"] == "sac":
        policy = C.GaussianActor(obs_dim, act_dim, a["hidden"])
    else:
        policy = C.ConsistencyPolicy(obs_dim, act_dim, a["hidden"], a["sigma_min"], a["sigma_max"], a["sigma_data"],
                                     embed=a.get("state_embed", 0))
    policy.load_state_dict(ckpt["policy"])
    critic = C.CriticEnsemble(obs_dim, act_dim, a["num_qs"], a["hidden"], a.get("state_embed", 0))
    critic.load_state_dict(ckpt["critic"])
    return a, policy, critic, ckpt["sigmas"]


def main():
    torch.manual_seed(0)
    rows = []
    out = os.path.join(HERE, sys.argv[sys.argv.index("--dir") + 1]) if "--dir" in sys.argv else HERE
    paths = sorted(glob.glob(os.path.join(out, "runs", "*", "model.pt")))
    if out == HERE:
        paths += glob.glob(os.path.join(HERE, "corrections", "runs", "*", "model.pt"))
    for path in paths:
        a = torch.load(path, weights_only=False)["args"]
        if not a["stage_one"]:  # a Stage I run (official/runs keeps them beside the Stage II runs)
            continue
        task = a["env_id"].split("/", 1)[1]
        demos = np.load(os.path.join(os.path.dirname(os.path.dirname(HERE)), "data", f"metaworld-{task}.npz"))
        ends = np.where(np.logical_or(demos["terminations"], demos["truncations"]))[0]
        ok = [e for e in ends if demos["terminations"][e] > 0][:a["num_demos"]]
        starts = [0] + [e + 1 for e in ends[:-1]]
        idx = np.concatenate([np.arange(s, e + 1) for s, e in zip(starts, ends) if e in ok])
        obs = torch.as_tensor(demos["observations"][idx], dtype=torch.float32)
        act = torch.as_tensor(np.clip(demos["actions"][idx], -1, 1), dtype=torch.float32)
        rew = C.task_reward(demos["terminations"][idx], None, True, a["success_reward"], a["step_penalty"])
        done = np.logical_or(demos["terminations"][idx], demos["truncations"][idx]).astype(np.float32)
        mc = float(C.mc_returns(rew, done, a["gamma"]).mean())  # the demos' Monte-Carlo return (V^mu), for scale
        for stage, p in (("after Stage I", a["stage_one"]), ("after Stage II", path)):
            _, policy, critic, sigmas = nets(p, obs.shape[1], act.shape[1])
            with torch.no_grad():
                pa = policy.sample(obs, sigmas, a["num_sample_steps"], noise=a["algo"] != "sac")
                rand = torch.rand_like(act) * 2 - 1
                rows.append({"run": os.path.relpath(os.path.dirname(path), out), "task": task, "algo": a["algo"],
                             "variant": a["exp_name"], "seed": a["seed"], "stage": stage,
                             "action_mse_to_demo": float(((pa - act) ** 2).mean()),
                             "at_box_edge": float((pa.abs() > 0.99).float().mean()),
                             "q_demo_actions": float(critic(obs, act).mean()),
                             "q_policy_actions": float(critic(obs, pa).mean()),
                             "q_random_actions": float(critic(obs, rand).mean()), "demo_mc_return": mc})
    path = os.path.join(out, "diagnostics.csv")
    if os.path.exists(path):  # keep the committed rows of every (task, algo, variant, seed) not run again
        key = lambda r: (r["task"], r["algo"], r["variant"], str(r["seed"]))  # noqa: E731
        fresh = {key(r) for r in rows}
        with open(path) as f:
            rows += [r for r in csv.DictReader(f) if key(r) not in fresh]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        print(" | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()))


if __name__ == "__main__":
    main()

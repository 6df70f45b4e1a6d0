"""BC references on the ConRFT benchmark tasks: how well does plain behaviour cloning from the same 20 demos do?

Trains, for each seed, 4,000 steps at batch 128 (ConRFT's Stage I budget in run.sh), Adam 3e-4, conrft.py's networks
(2 x 256, Dense-LayerNorm-tanh, as the official policy):
  gaussian-nll: conrft.py's tanh-Gaussian actor by negative log-likelihood of the demo actions;
  gaussian-mse: the same actor, squared error of its mean action tanh(mean(s)) (what --algo sac uses in Stage I);
  consistency:  conrft.py's consistency policy by its consistency loss (= --algo bc-only, = ConRFT's Stage I policy
                loss, eta 0 beta 1);
then evaluates each like conrft.py (10 episodes, env seeds 10000 + seed): the Gaussians at their mean action, the
consistency policy from z ~ N(0, I) as the official code does (`consistency`) and from z = 0 (`consistency-z0`).

    python benchmarks/conrft/bc_reference.py                                  # pick-place-v3, seeds 1-3
    python benchmarks/conrft/bc_reference.py --task push-v3 --seeds 1 --kinds consistency gaussian-mse
Rows for the task are replaced in bc_reference.csv next to this file (other tasks' rows are kept).
"""
import argparse
import csv
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
import conrft as C  # noqa: E402

STEPS, BATCH = 4000, 128
FIELDS = ["env", "policy", "seed", "steps", "demo_action_mse", "eval_return", "eval_success"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="pick-place-v3")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--kinds", nargs="+", default=["gaussian-nll", "gaussian-mse", "consistency"])
    ap.add_argument("--num-demos", type=int, default=20)
    a = ap.parse_args()
    torch.set_num_threads(1)
    env_id = f"metaworld/{a.task}"
    env = C.make_env(env_id, 1)()
    path = os.path.join(HERE, "..", "..", "data", f"metaworld-{a.task}.npz")
    d, n = C.first_episodes(C.load_demos(path, env), a.num_demos, True)
    print(f"{env_id}: {n} demos, {len(d['rewards'])} transitions", flush=True)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    obs = torch.as_tensor(d["observations"])
    act = torch.as_tensor(np.clip(d["actions"], -1 + 1e-5, 1 - 1e-5))
    sig = C.karras_sigmas(40, 0.002, 80.0, 7.0)
    rows = []
    for seed in a.seeds:
        for kind in a.kinds:
            torch.manual_seed(seed)
            if kind == "consistency":
                pol = C.ConsistencyPolicy(obs_dim, act_dim, 256, 0.002, 80.0, 0.5)
            else:
                pol = C.GaussianActor(obs_dim, act_dim, 256)
            opt = torch.optim.Adam(pol.parameters(), lr=3e-4)
            for _ in range(STEPS):
                idx = torch.randint(len(obs), (BATCH,))
                if kind == "gaussian-nll":
                    loss = -pol.log_prob(obs[idx], act[idx]).mean()
                elif kind == "gaussian-mse":
                    loss = ((pol.sample(obs[idx], noise=False) - act[idx]) ** 2).mean()
                else:
                    loss = C.consistency_loss(pol, obs[idx], act[idx], sig, 0.5)
                opt.zero_grad()
                loss.backward()
                opt.step()
            evals = [("consistency", True), ("consistency-z0", False)] if kind == "consistency" else [(kind, False)]
            for name, noise in evals:
                def act_fn(o, pol=pol, noise=noise):
                    with torch.no_grad():
                        return pol.sample(torch.as_tensor(o, dtype=torch.float32)[None], sig, 1, noise=noise)[0].numpy()

                torch.manual_seed(10_000 + seed)
                with torch.no_grad():
                    mse = float(((pol.sample(obs, sig, 1, noise=noise) - act) ** 2).mean())
                ret, succ = C.evaluate(act_fn, env_id, 10, 10_000 + seed)
                rows.append([env_id, name, seed, STEPS, mse, ret, succ])
                print(f"{name:15s} seed {seed}: demo-action mse {mse:.4f}, eval/return {ret:.1f}, "
                      f"eval/success {succ:.2f}", flush=True)
    out = os.path.join(HERE, "bc_reference.csv")
    old = []
    if os.path.exists(out):
        with open(out) as f:
            old = [r for r in csv.DictReader(f) if "env" in r and r["env"] != env_id]
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        w.writerows([[r[k] for k in FIELDS] for r in old] + rows)


if __name__ == "__main__":
    main()

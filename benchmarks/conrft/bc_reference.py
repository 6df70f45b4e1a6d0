"""BC references on the ConRFT benchmark task: how well does plain behaviour cloning from the same 20 demos do?

Trains, for seeds 1-3, 4,000 steps at batch 128 (ConRFT's Stage I budget in run.sh), Adam 3e-4, 2 x 256 networks:
  gaussian-nll: conrft.py's tanh-Gaussian actor by negative log-likelihood of the demo actions;
  gaussian-mse: the same actor, squared error of its mean action tanh(mean(s)) (what --algo sac uses in Stage I);
  consistency:  conrft.py's consistency policy by its consistency loss (= --algo bc-only);
then evaluates each like conrft.py (10 deterministic episodes, seeds 10000 + seed).

    python benchmarks/conrft/bc_reference.py     # writes bc_reference.csv next to this file (about 4 min on 1 core)
"""
import csv
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
import conrft as C  # noqa: E402

ENV, STEPS, BATCH = "metaworld/pick-place-v3", 4000, 128


def main():
    torch.set_num_threads(1)
    env = C.make_env(ENV, 1)()
    d, _ = C.first_episodes(C.load_demos(os.path.join(HERE, "..", "..", "data", "metaworld-pick-place-v3.npz"), env), 20, True)
    obs = torch.as_tensor(d["observations"])
    act = torch.as_tensor(np.clip(d["actions"], -1 + 1e-5, 1 - 1e-5))
    sig = C.karras_sigmas(40, 0.002, 80.0, 7.0)
    rows = []
    for seed in (1, 2, 3):
        for kind in ("gaussian-nll", "gaussian-mse", "consistency"):
            torch.manual_seed(seed)
            pol = C.ConsistencyPolicy(39, 4, 256, 0.002, 80.0, 0.5) if kind == "consistency" else C.GaussianActor(39, 4, 256)
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

            def act_fn(o, pol=pol):
                with torch.no_grad():
                    return pol.sample(torch.as_tensor(o, dtype=torch.float32)[None], sig, 1, noise=False)[0].numpy()

            with torch.no_grad():
                mse = float(((pol.sample(obs, sig, 1, noise=False) - act) ** 2).mean())
            ret, succ = C.evaluate(act_fn, ENV, 10, 10_000 + seed)
            rows.append((kind, seed, STEPS, mse, ret, succ))
            print(f"{kind:13s} seed {seed}: demo-action mse {mse:.4f}, eval/return {ret:.1f}, eval/success {succ:.2f}", flush=True)
    with open(os.path.join(HERE, "bc_reference.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["policy", "seed", "steps", "demo_action_mse", "eval_return", "eval_success"])
        w.writerows(rows)


if __name__ == "__main__":
    main()

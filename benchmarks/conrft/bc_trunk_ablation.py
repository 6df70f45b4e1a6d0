"""Which part of the consistency policy's network decides how well it imitates? Consistency BC (conrft.py's
consistency_loss) on pick-place-v3 with the same 20 demos, evaluation and seeds as bc_reference.py, for trunks:
  tanh-sin: conrft.py as it is (the official Dense-LayerNorm-tanh trunk, sinusoidal embedding of 250 log k);
  mish-lin: the pre-fix trunk (Mish) with a LayerNorm after each hidden layer, and the pre-fix learned linear time
            input of 0.25 log k (the network of the earlier measurement);
  tanh-lin, mish-sin: the two mixtures.

    python benchmarks/conrft/bc_trunk_ablation.py --variants mish-lin tanh-lin mish-sin --seeds 1 2 3
    python benchmarks/conrft/bc_trunk_ablation.py --variants tanh-sin --seeds 1 2 --steps 20000 --batch 256
Rows (variant, seed, steps, batch) are replaced in bc_trunk_ablation.csv next to this file.
"""
import argparse
import csv
import os
import sys

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
import conrft as C  # noqa: E402

ENV = "metaworld/pick-place-v3"
FIELDS = ["variant", "seed", "steps", "batch", "eval", "demo_action_mse", "eval_success"]


class LinearTime(nn.Module):
    """The pre-fix time input: Linear(1, 16) -> Mish -> Linear(16, 16) of 0.25 log k (conrft.py passes 250 log k)."""

    def __init__(self, t_dim=16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, t_dim), nn.Mish(), nn.Linear(t_dim, t_dim))

    def forward(self, t):
        return self.net(t / 1000)


def make_policy(variant, obs_dim, act_dim):
    pol = C.ConsistencyPolicy(obs_dim, act_dim, 256, 0.002, 80.0, 0.5)
    act, time_input = variant.split("-")
    if act == "mish":
        pol.net = nn.Sequential(nn.Linear(obs_dim + act_dim + 16, 256), nn.LayerNorm(256), nn.Mish(),
                                nn.Linear(256, 256), nn.LayerNorm(256), nn.Mish(), nn.Linear(256, act_dim))
    if time_input == "lin":
        pol.t_net = LinearTime()
    return pol


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", nargs="+", default=["tanh-sin", "mish-lin", "tanh-lin", "mish-sin"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=128)
    a = ap.parse_args()
    torch.set_num_threads(1)
    env = C.make_env(ENV, 1)()
    path = os.path.join(HERE, "..", "..", "data", "metaworld-pick-place-v3.npz")
    d, _ = C.first_episodes(C.load_demos(path, env), 20, True)
    obs = torch.as_tensor(d["observations"])
    act = torch.as_tensor(np.clip(d["actions"], -1 + 1e-5, 1 - 1e-5))
    sig = C.karras_sigmas(40, 0.002, 80.0, 7.0)
    out = os.path.join(HERE, "bc_trunk_ablation.csv")
    for seed in a.seeds:
        for variant in a.variants:
            torch.manual_seed(seed)
            pol = make_policy(variant, obs.shape[1], act.shape[1])
            opt = torch.optim.Adam(pol.parameters(), lr=3e-4)
            for _ in range(a.steps):
                idx = torch.randint(len(obs), (a.batch,))
                loss = C.consistency_loss(pol, obs[idx], act[idx], sig, 0.5)
                opt.zero_grad()
                loss.backward()
                opt.step()
            rows = []
            for name, noise in (("z~N(0,I)", True), ("z=0", False)):
                def act_fn(o, noise=noise):
                    with torch.no_grad():
                        return pol.sample(torch.as_tensor(o, dtype=torch.float32)[None], sig, 1, noise=noise)[0].numpy()

                torch.manual_seed(10_000 + seed)
                with torch.no_grad():
                    mse = float(((pol.sample(obs, sig, 1, noise=noise) - act) ** 2).mean())
                succ = C.evaluate(act_fn, ENV, 10, 10_000 + seed)[1]
                rows.append([variant, seed, a.steps, a.batch, name, mse, succ])
                print(f"{variant} seed {seed} ({a.steps} steps, batch {a.batch}) eval {name}: "
                      f"demo-action mse {mse:.4f}, eval/success {succ:.2f}", flush=True)
            old = []
            if os.path.exists(out):
                with open(out) as f:
                    key = (variant, str(seed), str(a.steps), str(a.batch))
                    old = [[r[k] for k in FIELDS] for r in csv.DictReader(f)
                           if (r["variant"], r["seed"], r["steps"], r["batch"]) != key]
            with open(out, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(FIELDS)
                w.writerows(old + rows)


if __name__ == "__main__":
    main()

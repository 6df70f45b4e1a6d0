"""Time one RLPD critic update step (target with the actor, subset-min, loss, backward, Adam, Polyak) for an
ensemble of E = 10 vs E = 2, in the same process, on Hopper-v4 shapes (obs 11, act 3), batch 256, 2 x 256.

    python benchmarks/rlpd/time_ensemble.py [--threads 1]    -> prints a table and writes timing.csv
"""
import argparse
import csv
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import rlpd  # noqa: E402


def time_update(num_qs, steps, warmup=20, batch=256, obs_dim=11, act_dim=3):
    torch.manual_seed(0)
    actor = rlpd.Actor(obs_dim, act_dim, 256, -np.ones(act_dim), np.ones(act_dim))
    critic, target = rlpd.CriticEnsemble(obs_dim, act_dim, num_qs), rlpd.CriticEnsemble(obs_dim, act_dim, num_qs)
    target.load_state_dict(critic.state_dict())
    opt = torch.optim.Adam(critic.parameters(), lr=3e-4)
    o, a, o2 = torch.randn(batch, obs_dim), torch.rand(batch, act_dim) * 2 - 1, torch.randn(batch, obs_dim)
    r, m = torch.randn(batch), torch.ones(batch)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with torch.no_grad():
            a2, logp2 = actor(o2)
            y = rlpd.td_target(r, m, rlpd.subset_min_target(target(o2, a2), 2), logp2, 0.1, 0.99, True)
        loss = rlpd.critic_loss(critic(o, a), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for p, tp in zip(critic.parameters(), target.parameters()):
                tp.lerp_(p, 0.005)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for rep in range(2):  # alternate to even out drift
        for e in (2, 10):
            rows.append((rep, e, time_update(e, args.steps)))
    ms = {e: np.mean([t for _, ee, t in rows if ee == e]) for e in (2, 10)}
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"timing_threads{args.threads}.csv")
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["repeat", "num_qs", "median_ms_per_critic_update"])
        w.writerows(rows)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.steps} steps after 20 warm-up, 2 repeats")
    print(f"E=2: {ms[2]:.2f} ms   E=10: {ms[10]:.2f} ms   ratio E10/E2: {ms[10] / ms[2]:.2f}")


if __name__ == "__main__":
    main()

"""Milliseconds per RLPD update, eager against torch.compile, in one process on one thread (Hopper shapes, 2 x 256,
batch 256, LayerNorm critics): rlpd.py's own critic_update() and actor_temperature_update(), the functions that
--compile wraps. Median of 300 calls after 20 warm-up calls (and after compilation). Writes update_timing.csv.

    python benchmarks/throughput/update_timing.py            (nothing else running)
"""
import csv
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
import rlpd  # noqa: E402

torch.set_num_threads(1)


def updaters(num_qs):
    args = rlpd.tyro.cli(rlpd.Args, args=["--num-qs", str(num_qs), "--utd", "1", "--offline-ratio", "0"])
    actor = rlpd.Actor(11, 3, args.hidden, -np.ones(3, np.float32), np.ones(3, np.float32))
    critic, target = (rlpd.CriticEnsemble(11, 3, num_qs, args.hidden, True) for _ in range(2))
    log_alpha = torch.tensor(0.0, requires_grad=True)
    a_opt, c_opt, t_opt = (torch.optim.Adam(p, lr=3e-4) for p in (actor.parameters(), critic.parameters(), [log_alpha]))
    cp, tp = list(critic.parameters()), list(target.parameters())

    def critic_step(b, alpha):
        return rlpd.critic_update(critic, target, actor, c_opt, cp, tp, b, alpha, args)

    def actor_step(obs, alpha):
        return rlpd.actor_temperature_update(actor, critic, a_opt, log_alpha, t_opt, obs, alpha, -1.5)

    return critic_step, actor_step


def median_ms(fn, n=300):
    for _ in range(20):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def main():
    g = torch.Generator().manual_seed(0)
    b = {"observations": torch.randn(256, 11, generator=g), "actions": torch.rand(256, 3, generator=g) * 2 - 1,
         "rewards": torch.randn(256, generator=g), "next_observations": torch.randn(256, 11, generator=g),
         "masks": torch.ones(256)}
    alpha, rows = torch.tensor(0.1), []
    for num_qs in (2, 10):
        for mode in ("eager", "compile"):
            critic_step, actor_step = updaters(num_qs)
            compile_s = 0.0
            if mode == "compile":
                torch._dynamo.reset()
                critic_step, actor_step = torch.compile(critic_step), torch.compile(actor_step)
                t = time.perf_counter()
                critic_step(b, alpha)
                actor_step(b["observations"], alpha)
                compile_s = time.perf_counter() - t
            row = {"num_qs": num_qs, "mode": mode, "critic_ms": round(median_ms(lambda: critic_step(b, alpha)), 2),
                   "actor_ms": round(median_ms(lambda: actor_step(b["observations"], alpha)), 2),
                   "compile_s": round(compile_s, 1)}
            rows.append(row)
            print(row, flush=True)
    with open(os.path.join(HERE, "update_timing.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()

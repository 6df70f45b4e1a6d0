"""Time one full ConRFT Stage I step as conrft.py makes it (cta_ratio 2 Cal-QL critic losses with 3 x 10 sampled
actions, then the official Stage I policy loss eta 0, beta 1; forward and backward, no optimiser step) on MetaWorld
shapes (obs 39, act 4), batch 256, 2 x 256 networks, 2 critics.

    python benchmarks/conrft/time_update.py [--threads 1]
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import conrft as C  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    a = argparse.Namespace(num_sample_steps=1, gamma=0.95, cql_n_actions=10, cql_alpha=0.1, sigma_data=0.5)
    sig = C.karras_sigmas(40, 0.002, 80.0, 7.0)
    pol, cr, tc = C.ConsistencyPolicy(39, 4, 256, 0.002, 80.0, 0.5), C.CriticEnsemble(39, 4, 2, 256), C.CriticEnsemble(39, 4, 2, 256)
    b = {"observations": torch.randn(256, 39), "actions": torch.rand(256, 4) * 2 - 1, "rewards": torch.zeros(256),
         "next_observations": torch.randn(256, 39), "masks": torch.ones(256), "mc_returns": torch.zeros(256)}
    times = []
    for _ in range(args.steps + 3):
        t = time.perf_counter()
        for _ in range(2):  # cta_ratio
            C.calql_loss(cr, tc, pol, b, sig, a)[0].backward()
        C.policy_loss(pol, cr, b["observations"], b["actions"], sig, a, 1.0, 0.0)[0].backward()
        times.append(time.perf_counter() - t)
    print(f"torch {torch.__version__}, {args.threads} thread(s): median {np.median(times[3:]) * 1e3:.0f} ms per Stage I step "
          f"({args.steps} updates after 3 warm-up)")


if __name__ == "__main__":
    main()

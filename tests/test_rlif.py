"""RLIF: reward labels from interventions, the value-based rule, the reference critic, CLI runs, bad input."""
import glob
import os
import subprocess
import sys

import numpy as np
import torch

import rlif
from conftest import ROOT
from template import load_policy, make_env

DATA = os.path.join(ROOT, "data")


def test_minus_one_exactly_before_takeovers():
    expert = [False, False, True, True, False, True, False, False]
    assert rlif.intervention_rewards(expert).tolist() == [0, -1, 0, 0, -1, 0, 0, 0]
    assert rlif.intervention_rewards([True, True]).tolist() == [0, 0]  # a takeover at the start has no learner step before it
    assert rlif.intervention_rewards([False, False]).tolist() == [0, 0]


def test_failure_label_makes_a_fall_worse_than_any_correction():
    gamma = 0.99
    assert rlif.failure_label(0.0, 1.0, gamma, True) == 0.0 and rlif.failure_label(-1.0, 1.0, gamma, True) == -1.0
    fall = rlif.failure_label(0.0, 0.0, gamma, True)
    assert abs(fall + 100.0) < 1e-9
    # an expert correcting at every step forever is worth sum_t gamma^t (-1) = -100: a fall is never better
    assert fall <= -sum(gamma**t for t in range(5000))
    assert rlif.failure_label(0.0, 0.0, gamma, False) == 0.0  # --no-terminal-penalty: the official labels


def test_value_rule_probabilities():
    u = np.random.default_rng(0).random(20000)
    fired = np.mean([rlif.should_intervene(0.5, 1.0, 0.99, 0.95, x) for x in u])  # 0.5 < 0.99 * 1.0: the rule fires
    quiet = np.mean([rlif.should_intervene(1.0, 1.0, 0.99, 0.95, x) for x in u])  # learner as good as the expert
    assert abs(fired - 0.95) < 0.01 and abs(quiet - 0.05) < 0.01


def test_reference_critic_prefers_expert_actions():
    torch.manual_seed(0)
    env = make_env("Hopper-v4", 0)()
    expert = load_policy(os.path.join(DATA, "Hopper-v4-expert-policy.npz"))
    q, r2, n = rlif.fit_qref(expert, env, episodes=4, steps=800, gamma=0.99, seed=0)
    assert n > 1000 and r2 > 0.5
    obs = np.load(os.path.join(DATA, "Hopper-v4-expert.npz"))["observations"][::50][:100]
    rng = np.random.default_rng(0)
    with torch.no_grad():
        q_exp = q(torch.as_tensor(obs), torch.as_tensor(expert(obs)))
        q_rand = q(torch.as_tensor(obs), torch.as_tensor(rng.uniform(-1, 1, (len(obs), 3)), dtype=torch.float32))
    assert (q_exp > q_rand).float().mean() > 0.7


def run_cli(tmp, *extra):
    cmd = [sys.executable, os.path.join(ROOT, "rlif.py"), "--total-timesteps", "400", "--start-training", "100", "--utd", "1",
           "--num-qs", "2", "--eval-every", "400", "--eval-episodes", "1", "--qref-episodes", "2", "--qref-steps", "100",
           "--bc-every", "200", "--bc-updates", "20", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp)


def test_cli_all_three_algorithms(in_tmp):
    for extra in (["--algo", "rlif", "--hil-serl"], ["--algo", "hg-dagger", "--intervention", "random"], ["--algo", "dagger"]):
        out = run_cli(in_tmp, *extra)
        assert out.returncode == 0, out.stderr[-2000:]
    runs = sorted(glob.glob(str(in_tmp / "runs" / "*")))
    assert len(runs) == 3 and all(os.path.exists(os.path.join(r, "model.pt")) for r in runs)
    for r in runs:
        rows = open(os.path.join(r, "metrics.csv")).read()
        assert "charts/intervention_rate" in rows and "eval/return" in rows


def test_cli_bad_input_is_one_sentence(in_tmp):
    out = run_cli(in_tmp, "--expert-level", "great")
    assert out.returncode == 1 and "Traceback" not in out.stderr and "Unknown --expert-level 'great'" in out.stderr
    out = run_cli(in_tmp, "--num-min-qs", "3")
    assert out.returncode == 1 and "--num-min-qs (3) must be between 1 and --num-qs (2)" in out.stderr
    out = run_cli(in_tmp, "--env-id", "Walker2d-v4", "--demo-path", os.path.join(DATA, "Hopper-v4-medium.npz"))
    assert out.returncode == 1 and "Traceback" not in out.stderr and "holds observations of shape (11,)" in out.stderr

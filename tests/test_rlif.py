"""RLIF: who acts and what is stored (step_decision), terminal labels, the value-based rule, the reference critic, CLI runs, bad input."""
import glob
import os
import re
import subprocess
import sys

import numpy as np
import torch

import rlif
from conftest import ROOT
from template import load_policy, make_env

DATA = os.path.join(ROOT, "data")


def simulate(fires, episode_lengths, takeover_steps=4, hand_back=True, terminal="drop"):
    """main()'s loop without env or learner: step_decision() each step, last_transition() at each episode end.
    A transition's obs is its global step, its act 1.0 if the expert acted; returns (who acted, stored transitions,
    takeover start steps)."""
    acted, stored, starts, t = [], [], [], 0
    for length in episode_lengths:
        pending, prev_expert, takeover_left = None, False, 0
        for k in range(length):
            expert, takeover_left, store = rlif.step_decision(pending, prev_expert, takeover_left, fires, takeover_steps, hand_back)
            if store is not None:
                stored.append(store)
            if expert and not prev_expert:
                starts.append(t)
            mask = 0.0 if k == length - 1 else 1.0  # every episode ends in a termination
            pending, prev_expert = rlif.Transition(t, float(expert), 0.0, t + 1, mask), expert
            acted.append(expert)
            t += 1
        store = rlif.last_transition(pending, 0.99, terminal)
        if store is not None:
            stored.append(store)
    return np.array(acted), stored, starts


def test_always_firing_rule_never_chains_takeovers():
    acted, stored, starts = simulate(lambda: True, [1000])  # one long episode, the rule fires at every check
    assert acted.mean() <= 4 / 5 and abs(acted.mean() - 4 / 5) < 0.01  # E E E E L E E E E L ...
    minus_one = [s for s in stored if s.rew == -1.0]
    assert len(minus_one) == len(starts) - 1  # one -1 per takeover, except the one at the episode's first step
    assert all(s.act == 0.0 and s.obs + 1 in starts for s in minus_one)  # the learner's step just before it
    assert all(not acted[s - 1] for s in starts[1:])  # every takeover after t = 0 follows a learner step
    # expert steps are stored only at a takeover's end (r = 0); the learner's other steps with r = 0
    expert_stored = [s.obs for s in stored if s.act == 1.0]
    assert expert_stored == [s + 3 for s in starts][:len(expert_stored)] and all(s.rew == 0.0 for s in stored if s.act == 1.0)


def test_episode_ends_and_terminal_modes():
    lengths = [7, 3, 12, 1, 9]
    acted, stored, starts = simulate(lambda: True, lengths, terminal="drop")
    firsts = np.cumsum([0] + lengths[:-1])
    assert set(firsts) <= set(starts)  # the rule is checked at every episode's first step
    assert sum(s.rew == -1.0 for s in stored) == len([s for s in starts if s not in firsts])
    assert all(s.mask == 1.0 for s in stored)  # drop: the last transition (the termination) is never stored
    _, penalty, _ = simulate(lambda: True, lengths, terminal="penalty")
    _, zero, _ = simulate(lambda: True, lengths, terminal="zero")
    for extra, r in ((penalty, -100.0), (zero, 0.0)):
        ends = [s for s in extra if s.mask == 0.0]
        assert len(ends) == len(lengths) and all(abs(s.rew - r) < 1e-9 for s in ends) and len(extra) == len(stored) + len(lengths)


def test_random_model_is_a_coin_per_step():
    rng = np.random.default_rng(0)
    acted, stored, starts = simulate(lambda: bool(rng.random() < 0.5), [20000], takeover_steps=1, hand_back=False)
    assert abs(acted.mean() - 0.5) < 0.02  # expert steps may follow each other: no hand-back
    assert sum(s.rew == -1.0 for s in stored) == sum(~acted[:-1] & acted[1:])  # -1 where a learner step precedes one
    never, stored0, _ = simulate(lambda: False, [50])
    assert not never.any() and all(s.rew == 0.0 for s in stored0) and len(stored0) == 49


def test_terminal_label_makes_a_fall_worse_than_any_correction():
    gamma = 0.99
    fall = rlif.terminal_label(0.0, gamma, "penalty")
    assert abs(fall + 100.0) < 1e-9 and rlif.terminal_label(1.0, gamma, "penalty") == 0.0
    # an expert correcting at every step forever is worth sum_t gamma^t (-1) = -100: a fall is never better
    assert fall <= -sum(gamma**t for t in range(5000))
    assert rlif.terminal_label(0.0, gamma, "zero") == 0.0 == rlif.terminal_label(0.0, gamma, "drop")


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
           "--num-qs", "2", "--hidden", "32", "--eval-every", "400", "--eval-episodes", "1", "--qref-episodes", "2", "--qref-steps", "100",
           "--bc-every", "200", "--bc-updates", "20", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp)


def test_cli_all_three_algorithms(in_tmp):
    for extra in (["--algo", "rlif", "--terminal", "drop", "--offline-ratio", "0.5"], ["--algo", "hg-dagger", "--intervention", "random"],
                  ["--algo", "dagger"]):
        out = run_cli(in_tmp, *extra)
        assert out.returncode == 0, out.stderr[-2000:]
        takeovers, expert_steps, minus_one = (int(x) for x in re.findall(r"takeovers (\d+), expert steps (\d+) of 400, -1 labels (\d+)",
                                                                            out.stdout)[0])
        assert minus_one <= takeovers and (takeovers > 0) == (extra[1] != "dagger")
        assert re.search(r"reference policy \(a_ref, Q_ref\): \S*Hopper-v4-expert-policy.npz", out.stdout)  # medium intervenes
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


def test_update_steps_are_rlpds_word_for_word():
    """rlif.py's SAC updates (and so --compile, which wraps them) are rlpd.py's, tested there."""
    import inspect

    import rlpd
    for name in ("critic_update", "actor_temperature_update", "subset_min_target", "td_target", "critic_loss",
                 "actor_loss", "temperature_loss"):
        assert inspect.getsource(getattr(rlif, name)) == inspect.getsource(getattr(rlpd, name)), name
    assert "compile" in rlif.Args.__dataclass_fields__

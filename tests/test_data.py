"""The shipped data: documented keys, shapes and finite values; experts that reach what data/README.md says."""
import glob
import os
import re

import gymnasium as gym
import numpy as np
import pytest

from conftest import ROOT
from template import DEMO_KEYS, evaluate, load_policy, make_env

DATA = os.path.join(ROOT, "data")
DATASETS = sorted(f for f in glob.glob(os.path.join(DATA, "*.npz")) if not f.endswith("-policy.npz"))
POLICIES = sorted(glob.glob(os.path.join(DATA, "*-policy.npz")))
LOCOMOTION = ["Hopper-v4", "Walker2d-v4", "HalfCheetah-v4"]
MT10 = ["reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
        "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3"]


def readme_return(name):
    """The mean return data/README.md states for a file (its table row: | `name` | ... | mean +- std ...)."""
    text = open(os.path.join(DATA, "README.md")).read()
    m = re.search(r"\| `" + re.escape(name) + r"` \|.*?\| (-?[\d.]+) \+- ([\d.]+)", text)
    assert m, f"data/README.md has no row for {name}"
    return float(m.group(1))


def test_everything_promised_is_there():
    names = {os.path.basename(f) for f in DATASETS + POLICIES}
    for env_id in LOCOMOTION:
        for level in ("expert", "medium"):
            assert f"{env_id}-{level}.npz" in names and f"{env_id}-{level}-policy.npz" in names
    for task in MT10:
        assert f"metaworld-{task}.npz" in names
    size = sum(os.path.getsize(f) for f in glob.glob(os.path.join(DATA, "*")))
    assert size < 30e6, f"data/ is {size / 1e6:.1f} MB"


@pytest.mark.parametrize("path", DATASETS, ids=os.path.basename)
def test_dataset_format(path):
    d = np.load(path)
    for k in DEMO_KEYS:
        assert d[k].dtype == np.float32 and np.isfinite(d[k]).all(), k
    n = len(d["actions"])
    assert d["observations"].shape == d["next_observations"].shape and len(d["observations"]) == n
    assert all(d[k].shape == (n,) for k in ("rewards", "terminations", "truncations"))
    ends = np.logical_or(d["terminations"], d["truncations"])
    assert ends[-1] and ends.sum() == int(d["num_episodes"])
    # episodes are contiguous: next_observations[i] is observations[i + 1] inside an episode
    inside = ~ends[:-1]
    assert np.allclose(d["next_observations"][:-1][inside], d["observations"][1:][inside])
    env_id = str(d["env_id"])
    env = make_env(env_id, 0)()
    assert d["observations"].shape[1:] == env.observation_space.shape
    assert d["actions"].shape[1:] == env.action_space.shape
    assert np.abs(d["actions"]).max() <= 1.0
    # the metadata agrees with the rewards it summarises
    ep_returns = np.add.reduceat(d["rewards"], np.r_[0, np.where(ends)[0][:-1] + 1])
    assert np.isclose(ep_returns.mean(), float(d["mean_return"]), rtol=1e-3)
    assert np.isclose(readme_return(os.path.basename(path)), float(d["mean_return"]), rtol=1e-3, atol=0.1)
    if env_id.startswith("metaworld/"):
        assert np.isclose(d["success"][ends].mean(), float(d["success_rate"]))


@pytest.mark.parametrize("env_id", LOCOMOTION)
def test_shipped_policies_reach_documented_return(env_id):
    """Two fresh deterministic episodes of each shipped policy come within 20% of data/README.md's mean."""
    means = {}
    for level in ("expert", "medium"):
        name = f"{env_id}-{level}-policy.npz"
        stated = readme_return(name)
        assert np.isclose(stated, float(np.load(os.path.join(DATA, name))["mean_return"]), rtol=1e-3, atol=0.1)
        got, _ = evaluate(load_policy(os.path.join(DATA, name)), env_id, episodes=2, seed=123)
        assert got > 0.8 * stated - 50, f"{name}: {got:.0f} vs documented {stated:.0f}"
        means[level] = stated
    assert 0.2 * means["expert"] <= means["medium"] <= 0.6 * means["expert"]


def test_scripted_demos_solve_the_task():
    d = np.load(os.path.join(DATA, "metaworld-reach-v3.npz"))
    assert float(d["success_rate"]) >= 0.9
    env = gym.make("Meta-World/MT1", env_name="reach-v3", seed=0)
    assert env.observation_space.shape == d["observations"].shape[1:]

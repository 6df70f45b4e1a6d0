"""ASAP: the 'real' env, reset-to-state replay, zero-init delta, tracking reward, the delta model learning."""
import argparse
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import asap_delta as A
from conftest import ROOT
from template import load_policy

POLICY = os.path.join(ROOT, "data", "Hopper-v4-expert-policy.npz")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread: on a loaded shared CPU, two threads made the PPO test 16 times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_real_env_passes_the_checker_and_differs():
    real = A.PhysicsGap(gym.make("Hopper-v4").unwrapped, mass_scale=1.5, action_delay=1)
    check_env(real, skip_render_check=True)
    assert real.unwrapped.model.body_mass[1] == gym.make("Hopper-v4").unwrapped.model.body_mass[1] * 1.5
    real.reset(seed=0)
    _, _, _, _, _ = real.step(np.ones(3, np.float32))
    assert np.allclose(real.queue[0], 1.0)  # the action waits one step


def test_reset_to_state_replays_a_real_transition_exactly_when_physics_match():
    act = load_policy(POLICY)
    same = A.PhysicsGap(gym.make("Hopper-v4"))  # "real" with unchanged physics
    trajs = A.collect_real(act, same, 1, 0.1, seed=0)
    env = A.DeltaTrackingEnv("Hopper-v4", trajs, horizon=5, lam=0.1, seed=0)
    for _ in range(5):
        env.reset()
        done = False
        while not done:
            _, r, term, trunc, info = env.step(np.zeros(3, np.float32))
            # equal up to float round-off (MuJoCo's solver warm start is not part of the recorded state)
            assert info["tracking_error"] < 1e-20 and -1e-20 < r <= 0.0
            done = term or trunc


def test_delta_starts_at_zero_and_shipped_policy_loads():
    delta = A.GaussianMLP(14, 3, 0.1, zero_last=True)
    assert torch.equal(delta.mean(torch.randn(8, 14)), torch.zeros(8, 3))
    p = dict(np.load(POLICY))
    actor = A.GaussianMLP(11, 3, 0.1, p["obs_mean"], p["obs_var"], init=p)
    obs = np.load(os.path.join(ROOT, "data", "Hopper-v4-expert.npz"))["observations"][:64]
    with torch.no_grad():
        a = np.clip(actor.mean(torch.as_tensor(obs)).numpy(), -1, 1)
    assert np.allclose(a, load_policy(POLICY)(obs), atol=1e-5)


def test_tracking_reward_sign_and_shape():
    err = A.state_error(np.zeros((4, 6)), np.zeros((4, 6)), np.ones((4, 6)), np.zeros((4, 6)))
    assert err.shape == (4,) and np.allclose(err, 5.0)  # root x is not tracked
    assert A.track_reward(0.0, np.zeros(3), 0.1) == 0.0
    assert A.track_reward(1.0, np.zeros(3), 0.1) < A.track_reward(0.5, np.zeros(3), 0.1) < 0
    assert A.track_reward(0.5, np.ones(3), 0.1) < A.track_reward(0.5, np.zeros(3), 0.1)


def test_short_ppo_lowers_one_step_tracking_error(tmp_path, monkeypatch):
    """Real motors at half strength: a short PPO run of the delta model lowers held-out one-step error."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    act = load_policy(POLICY)
    trajs = A.collect_real(act, A.PhysicsGap(gym.make("Hopper-v4"), gear_scale=0.5), 4, 0.3, seed=0)
    train, held = trajs[:3], trajs[3:]
    args = argparse.Namespace(seed=0, num_steps=256, num_minibatches=8, update_epochs=10, lr=1e-3, gamma=0.0,
                              gae_lambda=0.0, clip_coef=0.2, eval_every=10**9)
    delta = A.GaussianMLP(14, 3, 0.3, zero_last=True)

    class NoLog:
        def log(self, step, **kw):
            pass

        def steps(self, iterable):  # as Logger.steps without a signal
            return iterable

    fns = [lambda i=i: A.DeltaTrackingEnv("Hopper-v4", train, 1, 0.0, i) for i in range(4)]
    before, _ = A.open_loop_error("Hopper-v4", held, 1, stride=1)
    A.ppo(fns, delta, A.critic_net(14), 16_384, args, NoLog(), "delta")

    after, _ = A.open_loop_error("Hopper-v4", held, 1, delta_model=delta, stride=1)
    assert after < 0.8 * before, (before, after)


def test_cli_direct_and_bad_policy(in_tmp):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "asap_delta.py"), "--method", "direct", "--eval-episodes", "1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "direct transfer" in out.stdout
    out = subprocess.run([sys.executable, os.path.join(ROOT, "asap_delta.py"), "--env-id", "Walker2d-v4", "--policy-path", POLICY],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr and "takes observations of size 11" in out.stderr


def test_sysid_converges_to_known_scales_on_a_synthetic_gap():
    """'Real' = gear x0.794 (a grid point): the coordinate search, run until a round changes nothing, finds it
    (the old 2-round search, mass first, stopped at mass 1.41 on this gap)."""
    act = load_policy(POLICY)
    trajs = A.collect_real(act, A.PhysicsGap(gym.make("Hopper-v4"), gear_scale=0.5 ** 0.333333), 1, 0.1, seed=0)
    trajs[0] = {k: v[:301] if k != "act" else v[:300] for k, v in trajs[0].items()}  # 300 steps keep it cheap
    scales, rounds, converged = A.sysid_search("Hopper-v4", trajs, 10, 13, 10)
    assert converged and rounds >= 4
    assert np.allclose(scales, [1.0, 1.0, 0.5 ** (1 / 3)], rtol=1e-3), scales


def test_delta_env_never_terminates_on_a_fall():
    act = load_policy(POLICY)
    trajs = A.collect_real(act, A.PhysicsGap(gym.make("Hopper-v4"), mass_scale=1.5), 1, 0.1, seed=0)
    for reward in ("error", "official"):
        env = A.DeltaTrackingEnv("Hopper-v4", trajs, horizon=50, lam=0.1, seed=0, reward=reward)
        rng, fell = np.random.default_rng(0), 0
        for _ in range(20):
            obs, _ = env.reset()
            for _ in range(50):
                obs, r, term, trunc, _ = env.step(rng.choice([-1.0, 1.0], 3).astype(np.float32))  # bang-bang: falls
                assert not term and np.isfinite(r)
                fell += not env.sim.is_healthy
                if trunc:
                    break
            assert trunc  # every episode ends by truncation only
            t = min(env.t, len(env.traj["act"]) - 1)
            assert np.array_equal(obs[-3:], env.traj["act"][t])  # the bootstrap obs holds the next real action
        assert fell > 0  # the sim did fall, and the episode went on


def test_official_reward_form():
    q, v = np.zeros(6), np.zeros(6)
    assert A.official_track_reward(q, v, q, v, np.zeros(3), np.zeros(3)) == 2.5
    worse = A.official_track_reward(q + 0.1, v, q, v, np.zeros(3), np.zeros(3))
    assert worse < 2.5
    assert A.official_track_reward(q, v, q, v, np.ones(3), np.ones(3)) < 2.5 - 0.1 * (np.exp(3 ** 0.5) - 1) + 1e-9
    assert A.official_track_reward(q, v, q, v, np.ones(3), -np.ones(3)) < A.official_track_reward(
        q, v, q, v, np.ones(3), np.ones(3))  # action rate


def test_critic_sees_normalised_inputs():
    torch.manual_seed(0)
    mean, var = np.full(4, 100.0), np.full(4, 1e4)
    v, unit = A.critic_net(4, mean, var), A.critic_net(4)
    unit.load_state_dict({k: t for k, t in v.state_dict().items() if k not in ("mu_in", "sd_in")}, strict=False)
    x = torch.full((2, 4), 300.0)  # (300 - 100) / 100 = 2 per input
    assert torch.allclose(v(x), unit(torch.full((2, 4), 2.0)), atol=1e-5)
    assert sum(p.requires_grad for p in v.parameters()) == 6  # 3 weights + 3 biases; no log std

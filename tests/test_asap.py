"""ASAP: the 'real' env, reset-to-state replay, zero-init delta, tracking rewards, PPO's loss and GAE, the delta
model learning, the aligned sim, SysID, and what main() builds and fine-tunes in for each method."""
import argparse
import copy
import glob
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


def test_unmodelled_actuator_gaps_pass_the_checker_and_act_as_documented():
    """Dead zone 0.3 + saturation 0.5: the real next state is the plain sim's after u = clip(sign(a) max(|a| - 0.3, 0),
    +-0.5), not after a. Low-pass 0.5: the sim is driven by applied_t = 0.5 applied_{t-1} + 0.5 a_t, from 0 at reset."""
    for kw in ({"dead_zone": 0.3, "saturation": 0.5}, {"lowpass": 0.5}, {"dead_zone": 0.2, "lowpass": 0.6}):
        check_env(A.PhysicsGap(gym.make("Hopper-v4").unwrapped, **kw), skip_render_check=True)
    f32 = lambda x: np.array(x, np.float32)  # noqa: E731
    real, plain, raw = A.PhysicsGap(gym.make("Hopper-v4"), dead_zone=0.3, saturation=0.5), gym.make("Hopper-v4"), \
        gym.make("Hopper-v4")
    for env in (real, plain, raw):
        env.reset(seed=0)
    for a, u in (([0.2, -0.25, 0.0], [0.0, 0.0, 0.0]), ([0.6, -0.7, 1.0], [0.3, -0.4, 0.5])):
        obs = real.step(f32(a))[0]
        assert np.allclose(obs, plain.step(f32(u))[0], atol=1e-6, rtol=0)
        assert not np.allclose(obs, raw.step(f32(a))[0], atol=1e-3, rtol=0)
    lag, plain = A.PhysicsGap(gym.make("Hopper-v4"), lowpass=0.5), gym.make("Hopper-v4")
    for _ in range(2):  # the filter restarts from 0 at every reset
        lag.reset(seed=0)
        plain.reset(seed=0)
        applied = np.zeros(3)
        for a in ([0.8, -0.8, 0.4], [0.0, 0.6, -1.0], [1.0, 1.0, 1.0]):
            applied = 0.5 * applied + 0.5 * f32(a)
            assert np.allclose(lag.step(f32(a))[0], plain.step(f32(applied))[0], atol=1e-6, rtol=0)


def test_gap_flags_reach_the_real_env_and_bad_values_end_in_one_sentence(in_tmp, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["asap_delta.py", "--method", "direct", "--eval-episodes", "1", "--dead-zone",
                                      "0.2", "--saturation", "0.7", "--action-lowpass", "0.5"])
    assert A.main() == 0
    real = gym.make("asap/Hopper-v4-real")
    assert [real.get_wrapper_attr(k) for k in ("dead_zone", "saturation", "lowpass")] == [0.2, 0.7, 0.5]
    for bad in ({"dead_zone": 1.0}, {"dead_zone": -0.1}, {"saturation": 0.0}, {"saturation": 1.5},
                {"action_lowpass": 1.0}):
        with pytest.raises(SystemExit, match="must lie in"):
            A.check_args(A.Args(**bad))


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


def test_official_reward_terms_and_kernel_widths():
    """Each term of official_track_reward() alone: weight x exp(-mean squared error / sigma), and the two penalties."""
    q, v, zero = np.zeros(6), np.zeros(6), np.zeros(3)
    dz = q.copy()
    dz[1] = 0.1  # root height off by 0.1: body position (root z and pitch), weight 1, sigma 0.03
    assert np.isclose(A.official_track_reward(dz, v, q, v, zero, zero), np.exp(-0.01 / 2 / 0.03) + 1.5)
    dj = q.copy()
    dj[3:] = 0.5  # joint angles: weight 0.5, sigma 1
    assert np.isclose(A.official_track_reward(dj, v, q, v, zero, zero), 2.0 + 0.5 * np.exp(-0.25))
    dv = v.copy()
    dv[:3] = 1.0  # root velocities: weight 0.5, sigma 1
    assert np.isclose(A.official_track_reward(q, dv, q, v, zero, zero), 2.0 + 0.5 * np.exp(-1.0))
    dvj = v.copy()
    dvj[3:] = 2.0  # joint velocities: weight 0.5, sigma 1
    assert np.isclose(A.official_track_reward(q, dvj, q, v, zero, zero), 2.0 + 0.5 * np.exp(-4.0))
    d = np.array([0.3, 0.0, -0.4])  # action rate -0.01 ||d - d_prev||^2, action norm -0.1 (exp(||d||) - 1)
    assert np.isclose(A.official_track_reward(q, v, q, v, d, zero), 2.5 - 0.01 * 0.25 - 0.1 * (np.exp(0.5) - 1))


def test_ppo_loss_clips_the_ratio():
    """Advantages (1, -1) normalise to (+-1/sqrt 2); at ratio 1.5 the positive one is clipped to 1.2 (no gradient),
    the negative one is not; approx_kl = (r - 1) - log r."""
    new_logp = torch.full((2,), float(np.log(1.5)), requires_grad=True)
    loss, kl = A.ppo_loss(new_logp, torch.zeros(2), torch.tensor([1.0, -1.0]), 0.2)
    assert np.isclose(loss.item(), (-1.2 + 1.5) / 2 / np.sqrt(2), atol=1e-6)
    assert np.isclose(kl.item(), 0.5 - np.log(1.5), atol=1e-6)
    loss.backward()
    assert new_logp.grad[0] == 0 and new_logp.grad[1] > 0


def test_gae_bootstraps_from_next_values_and_cuts_at_episode_ends():
    """Two envs, two steps, gamma 0.9, lambda 0.8: env 0 runs on, env 1's episode ends after step 0."""
    rew, val = torch.ones(2, 2), torch.full((2, 2), 0.5)
    next_val = torch.tensor([[0.5, 3.0], [2.0, 0.5]])  # env 1 step 0: V(final obs) of a truncated episode
    done = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    adv, ret = A.gae(rew, val, next_val, done, 0.9, 0.8)
    td = rew + 0.9 * next_val - val
    assert torch.allclose(adv[1], td[1])
    assert torch.allclose(adv[0], torch.stack([td[0, 0] + 0.72 * td[1, 0], td[0, 1]]))  # env 1: cut at its end
    assert torch.allclose(ret, adv + val)


def test_aligned_sim_shifts_the_next_state_as_the_same_action_shift_in_the_plain_sim():
    """A frozen delta model that outputs a constant c: stepping AlignedSim with a gives exactly the plain sim stepped
    with clip(a + c), step after step, and not the plain sim stepped with a."""
    delta = A.GaussianMLP(14, 3, 0.1, zero_last=True)
    with torch.no_grad():
        delta.net[4].bias.copy_(torch.tensor([0.2, -0.3, 0.1]))
    c = delta.act(np.zeros(14))
    aligned, shifted, plain = A.AlignedSim(gym.make("Hopper-v4"), delta), gym.make("Hopper-v4"), gym.make("Hopper-v4")
    for env in (aligned, shifted, plain):
        env.reset(seed=0)
    for a in ([0.5, 0.5, 0.5], [0.9, -0.9, 0.0], [-1.0, 1.0, 0.95]):  # the last ones clip at the bounds
        a = np.array(a, np.float32)
        obs = aligned.step(a)[0]
        assert np.array_equal(obs, shifted.step(np.clip(a + c, -1, 1))[0])
        assert not np.array_equal(obs, plain.step(a)[0])


def test_sysid_search_picks_the_scale_with_the_least_error():
    """'Real' = torso mass x 2, a point of the 3-value grid (0.5, 1, 2): one round of the search finds it."""
    act = load_policy(POLICY)
    trajs = A.collect_real(act, A.PhysicsGap(gym.make("Hopper-v4"), mass_scale=2.0), 1, 0.1, seed=0)
    trajs[0] = {k: v[:101] if k != "act" else v[:100] for k, v in trajs[0].items()}  # 100 steps keep it cheap
    scales, rounds, converged = A.sysid_search("Hopper-v4", trajs, 10, 3, max_rounds=1, min_rounds=1)
    assert np.allclose(scales, [2.0, 1.0, 1.0]) and rounds == 1 and not converged


MAIN_ARGS = ["--real-episodes", "1", "--heldout-episodes", "1", "--eval-episodes", "1", "--delta-horizon", "5",
             "--delta-steps", "64", "--finetune-steps", "64", "--num-envs", "2", "--num-steps", "32",
             "--num-minibatches", "2", "--update-epochs", "1", "--critic-warmup-iters", "0", "--eval-every", "1000000",
             "--lr", "1e-3", "--sysid-grid", "3", "--sysid-rounds", "4"]


@pytest.mark.parametrize("method", ["asap", "finetune-sim", "sysid"])
def test_main_fine_tunes_in_the_sim_its_method_builds(method, in_tmp, monkeypatch):
    """main() on a tiny budget with its ppo() calls watched: the policy starts from the shipped weights, both critics
    normalise their inputs by the statistics main() gives them, the delta model starts as no correction, and the
    envs of the fine-tuning stage are the aligned sim (asap: every step goes through AlignedSim, whose next state is
    the plain sim's after a + pi_delta(s, a)), the plain sim (finetune-sim) or the sim with the fitted scales (sysid)."""
    calls, aligned_steps, real_ppo, real_step = {}, [0], A.ppo, A.AlignedSim.step

    def counting_step(self, action):
        aligned_steps[0] += 1
        return real_step(self, action)

    def watched_ppo(env_fns, actor, critic, total_steps, args, log, tag, **kw):
        calls[tag] = {"fns": env_fns, "actor": actor, "critic": critic, "actor_at_start": copy.deepcopy(actor)}
        start = aligned_steps[0]
        real_ppo(env_fns, actor, critic, total_steps, args, log, tag, **kw)
        calls[tag]["aligned_steps"] = aligned_steps[0] - start

    monkeypatch.setattr(A.AlignedSim, "step", counting_step)
    monkeypatch.setattr(A, "ppo", watched_ppo)
    gap = ["--mass-scale", "2"] if method == "sysid" else []
    monkeypatch.setattr(sys, "argv", ["asap_delta.py", "--method", method, *gap, *MAIN_ARGS])
    assert A.main() == 0
    p, fine = dict(np.load(POLICY)), calls["finetune"]
    obs = np.load(os.path.join(ROOT, "data", "Hopper-v4-expert.npz"))["observations"][:32]
    assert np.allclose(np.clip(fine["actor_at_start"].act(obs), -1, 1), load_policy(POLICY)(obs), atol=1e-5)
    assert torch.equal(fine["critic"].mu_in, torch.as_tensor(p["obs_mean"]))
    assert torch.equal(fine["critic"].sd_in, torch.as_tensor(np.sqrt(p["obs_var"] + 1e-8)))
    a = np.full(3, 0.5, np.float32)
    env, ref, ref_action = fine["fns"][0](), gym.make("Hopper-v4"), a
    obs, _ = env.reset(seed=3)
    if method == "asap":
        delta = calls["delta"]
        assert torch.equal(delta["actor_at_start"].mean(torch.randn(8, 14)), torch.zeros(8, 3))
        zero, one = np.zeros(3, np.float32), np.ones(3, np.float32)
        assert torch.equal(delta["critic"].mu_in, torch.as_tensor(np.concatenate([p["obs_mean"], zero])))
        assert torch.equal(delta["critic"].sd_in, torch.as_tensor(np.sqrt(np.concatenate([p["obs_var"], one]) + 1e-8)))
        assert fine["aligned_steps"] >= 64  # every fine-tuning step (2 envs x 32) went through the aligned sim
        d = delta["actor"].act(np.concatenate([obs, a]))  # the trained delta model, which AlignedSim holds
        assert np.abs(d).max() > 0
        ref_action = np.clip(a + np.clip(d, -1, 1), -1, 1)
    elif method == "sysid":
        scales = torch.load(glob.glob("runs/*/model.pt")[0], weights_only=False)["sysid_scales"]
        assert scales != [1.0, 1.0, 1.0]  # the search moved, so the plain sim would differ
        ref = A.PhysicsGap(ref, *scales)
    else:
        assert "delta" not in calls and fine["aligned_steps"] == 0
    ref.reset(seed=3)
    next_obs = env.step(a)[0]
    assert np.array_equal(next_obs, ref.step(ref_action)[0])
    if method != "finetune-sim":
        plain = gym.make("Hopper-v4")
        plain.reset(seed=3)
        assert not np.array_equal(next_obs, plain.step(a)[0])

"""RLPD: ensemble shapes, LayerNorm placement, the subset-min target, the losses' values, symmetric sampling, a
fixed-point fit, what main() stores and the order of its updates, CLI runs and bad input. tools/mutants.py lists
the mutants (one per fidelity row or equation) these tests kill."""
import glob
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlpd
from conftest import ROOT


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread in these tests: on a loaded 2-core machine the two of conftest.py made the fixed-point fit
    take 183 s instead of 3 s (threads waiting on each other)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_critic_ensemble_is_one_batched_module():
    torch.manual_seed(0)
    critic = rlpd.CriticEnsemble(11, 3, num_qs=10, hidden=32)
    q = critic(torch.randn(7, 11), torch.randn(7, 3))
    assert q.shape == (10, 7, 1)
    assert critic.net[0].weight.shape == (10, 14, 32)  # the ensemble is a leading dimension, not a list
    assert not torch.allclose(q[0], q[1])  # members are independent


def test_subset_min_target_shape_and_bounds():
    torch.manual_seed(0)
    q_next = torch.randn(10, 64, 1)
    for _ in range(20):
        t = rlpd.subset_min_target(q_next, 2)
        assert t.shape == (64, 1)
        assert (t <= q_next.max(0).values).all() and (t >= q_next.min(0).values).all()
    # with Z = E it is the full min; with Z = 1 it is one member
    assert torch.equal(rlpd.subset_min_target(q_next, 10), q_next.min(0).values)
    one = rlpd.subset_min_target(q_next, 1)
    assert any(torch.equal(one, q_next[i]) for i in range(10))


def test_td_target_masks_only_terminations():
    r, q, logp = torch.ones(4), torch.full((4, 1), 10.0), torch.zeros(4, 1)
    y = rlpd.td_target(r, torch.tensor([1.0, 0.0, 1.0, 0.0]), q, logp, 0.1, 0.9, True)
    assert y.shape == (4, 1) and y[:, 0].tolist() == [10.0, 1.0, 10.0, 1.0]


def test_symmetric_sampling_is_half_demos_in_every_slice():
    rng = np.random.default_rng(0)
    make = lambda n, v: {"observations": np.full((n, 2), v, np.float32), "actions": np.zeros((n, 1), np.float32),  # noqa: E731
                         "rewards": np.full(n, v, np.float32), "next_observations": np.zeros((n, 2), np.float32),
                         "masks": np.ones(n, np.float32)}
    online, offline = make(100, 0.0), make(50, 1.0)
    for ratio in (0.5, 0.25):  # 0.25 too: a swapped mix (1 - ratio offline) looks right at 0.5
        b = rlpd.sample_batch(online, offline, 256, 20, ratio, rng)
        assert b["observations"].shape == (20, 256, 2)
        assert torch.equal(b["is_offline"].mean(1), torch.full((20,), ratio))
        assert torch.equal(b["rewards"], b["is_offline"])  # offline rows really come from the offline data
    b0 = rlpd.sample_batch(online, None, 256, 2, 0.0, rng)
    assert b0["is_offline"].sum() == 0 and b0["rewards"].shape == (2, 256)


def test_critic_fits_a_fixed_point():
    """r = 1, mask = 1, gamma = 0.5, no entropy backup: Q -> r / (1 - gamma) = 2 on the data."""
    torch.manual_seed(0)
    critic, target = rlpd.CriticEnsemble(3, 1, 4, hidden=64), rlpd.CriticEnsemble(3, 1, 4, hidden=64)
    target.load_state_dict(critic.state_dict())
    opt = torch.optim.Adam(critic.parameters(), lr=3e-3)
    obs, act = torch.randn(128, 3), torch.rand(128, 1) * 2 - 1
    for _ in range(600):
        with torch.no_grad():
            y = rlpd.td_target(torch.ones(128), torch.ones(128), rlpd.subset_min_target(target(obs, act), 2),
                               torch.zeros(128, 1), 0.0, 0.5, False)
        loss = rlpd.critic_loss(critic(obs, act), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for p, tp in zip(critic.parameters(), target.parameters()):
                tp.lerp_(p, 0.1)
    assert (critic(obs, act) - 2.0).abs().mean() < 0.15


def test_actor_moves_toward_high_q_actions():
    """With a fixed critic that peaks at the demo action, the actor loss pulls the mean action there."""
    torch.manual_seed(0)
    actor = rlpd.Actor(3, 2, 64, np.full(2, -1.0), np.full(2, 1.0))
    opt = torch.optim.Adam(actor.parameters(), lr=3e-3)
    obs, a_star = torch.randn(256, 3), torch.tensor([0.5, -0.3])
    dist0 = (actor(obs, deterministic=True)[0] - a_star).norm(dim=-1).mean().item()
    for _ in range(300):
        a, logp = actor(obs)
        qs = -((a - a_star) ** 2).sum(-1, keepdim=True).unsqueeze(0) * 10  # (1, B, 1)
        loss = rlpd.actor_loss(qs, logp, 0.01)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (actor(obs, deterministic=True)[0] - a_star).norm(dim=-1).mean().item() < 0.3 * dist0


def test_temperature_loss_direction():
    log_alpha = torch.zeros((), requires_grad=True)
    rlpd.temperature_loss(log_alpha, torch.full((8, 1), -5.0), -1.0).backward()  # entropy 5 > target -1
    assert log_alpha.grad > 0  # gradient descent lowers alpha


def run_cli(tmp, *extra):
    cmd = [sys.executable, os.path.join(ROOT, "rlpd.py"), "--total-timesteps", "400", "--start-training", "200",
           "--utd", "2", "--num-qs", "4", "--eval-every", "400", "--eval-episodes", "1", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp)


def test_cli_with_and_without_demos(in_tmp):
    for extra in ([], ["--demo-path", "none"]):
        out = run_cli(in_tmp, *extra)
        assert out.returncode == 0, out.stderr[-2000:]
    runs = sorted(glob.glob(str(in_tmp / "runs" / "*")))
    assert len(runs) == 2 and all(os.path.exists(os.path.join(r, "model.pt")) for r in runs)
    assert sorted("__off0.5__" in r for r in runs) == [False, True]  # the run name says what ran:
    assert sum("__off0.0__" in r for r in runs) == 1  # --demo-path none mixes in no offline data
    rows = open(os.path.join(runs[0], "metrics.csv")).read()
    assert "eval/return" in rows and "charts/offline_fraction" in rows


def test_cli_bad_input_is_one_sentence(in_tmp):
    out = run_cli(in_tmp, "--num-min-qs", "5")
    assert out.returncode == 1 and "Traceback" not in out.stderr and "--num-min-qs (5) must be between 1 and --num-qs (4)" in out.stderr
    out = run_cli(in_tmp, "--env-id", "Walker2d-v4", "--demo-path", os.path.join(ROOT, "data", "Hopper-v4-medium.npz"))
    assert out.returncode == 1 and "Traceback" not in out.stderr and "holds observations of shape (11,)" in out.stderr


def test_official_init_xavier_kernels_and_zero_biases():
    """ikostrikov/rlpd initialises every Dense (output layers included) with xavier_uniform and zero bias."""
    torch.manual_seed(0)
    critic = rlpd.CriticEnsemble(11, 3, num_qs=4, hidden=64)
    actor = rlpd.Actor(11, 3, 64, -np.ones(3), np.ones(3))
    for name, p in [*critic.named_parameters(), *actor.named_parameters()]:
        if "bias" in name and "net.1" not in name and "net.4" not in name:  # LayerNorm's bias is 0 anyway
            assert torch.count_nonzero(p) == 0, name
    lin = [m for m in critic.modules() if isinstance(m, rlpd.EnsembleLinear)]
    for m in lin:
        inp, out = m.weight.shape[1:]
        bound = np.sqrt(6 / (inp + out))
        assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.9 * bound  # xavier, not 1/sqrt(fan_in)
    assert actor.mean.weight.abs().max() > 0.9 * np.sqrt(6 / (64 + 3))


def updaters(seed):
    torch.manual_seed(seed)
    args = rlpd.Args(num_qs=3, num_min_qs=2, hidden=32)
    actor = rlpd.Actor(5, 2, 32, -np.ones(2), np.ones(2))
    critic, target = rlpd.CriticEnsemble(5, 2, 3, 32), rlpd.CriticEnsemble(5, 2, 3, 32)
    target.load_state_dict(critic.state_dict())
    log_alpha = torch.tensor(0.0, requires_grad=True)
    opts = [torch.optim.Adam(m, lr=1e-3) for m in (critic.parameters(), actor.parameters(), [log_alpha])]
    cp, tp = list(critic.parameters()), list(target.parameters())

    def critic_step(b, alpha):
        return rlpd.critic_update(critic, target, actor, opts[0], cp, tp, b, alpha, args)

    def actor_step(obs, alpha):
        return rlpd.actor_temperature_update(actor, critic, opts[1], log_alpha, opts[2], obs, alpha, -1.0)

    return critic_step, actor_step, (critic, target, actor, log_alpha)


def test_compiled_update_equals_eager_and_polyak_is_one_foreach_op():
    """--compile wraps the same functions: with the same random numbers it gives the same parameters. The target
    moves by tau toward the online critic after every critic step."""
    from torch._inductor import config

    g = torch.Generator().manual_seed(0)
    batches = [{"observations": torch.randn(16, 5, generator=g), "actions": torch.rand(16, 2, generator=g) * 2 - 1,
                "rewards": torch.randn(16, generator=g), "next_observations": torch.randn(16, 5, generator=g),
                "masks": torch.ones(16)} for _ in range(3)]
    results = []
    for compiled in (False, True):
        critic_step, actor_step, nets = updaters(0)
        if compiled:
            torch._dynamo.reset()
            critic_step, actor_step = torch.compile(critic_step), torch.compile(actor_step)
        torch.manual_seed(1)
        with config.patch(fallback_random=True):  # the compiled code draws the same random numbers as eager
            for b in batches:
                before = [p.detach().clone() for p in nets[1].parameters()]
                online_before = [p.detach().clone() for p in nets[0].parameters()]
                critic_step(b, torch.tensor(0.5))
                for t0, t1, p in zip(before, nets[1].parameters(), nets[0].parameters()):
                    assert torch.allclose(t1, t0 + 0.005 * (p - t0), atol=1e-6)  # Polyak with the updated critic
                assert any(not torch.equal(a, b) for a, b in zip(online_before, nets[0].parameters()))
                actor_step(b["observations"], torch.tensor(0.5))
        results.append([p.detach().clone() for m in nets[:3] for p in m.parameters()] + [nets[3].detach().clone()])
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


# ---- the losses' values, the network layout and what main() does (each kills a mutant in tools/mutants.py) ----
def test_defaults_are_the_official_ones():
    """The defaults of configs/rlpd_config.py, td_config.py, sac_config.py and the README's commands."""
    a = rlpd.Args()
    assert (a.num_qs, a.num_min_qs, a.utd, a.batch_size, a.offline_ratio, a.hidden) == (10, 2, 20, 256, 0.5, 256)
    assert (a.actor_lr, a.critic_lr, a.temp_lr, a.gamma, a.tau, a.init_temperature) == (3e-4, 3e-4, 3e-4, 0.99, 0.005, 1.0)
    assert a.backup_entropy and a.critic_layer_norm
    assert (a.start_training, a.eval_every, a.eval_episodes) == (5000, 5000, 10)


def test_critic_layer_norm_comes_before_each_relu():
    """Dense -> LayerNorm -> ReLU: every ReLU gets a per-sample normalised vector (mean 0, variance 1 at init), and
    every hidden Dense gets a ReLU output (>= 0)."""
    torch.manual_seed(0)
    critic = rlpd.CriticEnsemble(11, 3, num_qs=4, hidden=64)
    relu_in, dense_in = [], []
    for m in critic.modules():
        if isinstance(m, torch.nn.ReLU):
            m.register_forward_hook(lambda m, inp, out: relu_in.append(inp[0]))
        if isinstance(m, rlpd.EnsembleLinear):
            m.register_forward_hook(lambda m, inp, out: dense_in.append(inp[0]))
    critic(5 * torch.randn(32, 11) + 3, torch.rand(32, 3) * 2 - 1)
    assert len(relu_in) == 2 and len(dense_in) == 3
    for x in relu_in:
        assert torch.allclose(x.mean(-1), torch.zeros(()), atol=1e-4)
        assert torch.allclose(x.var(-1, unbiased=False), torch.ones(()), atol=1e-3)
    assert all((x >= 0).all() for x in dense_in[1:])


def test_subset_min_target_draws_a_random_subset_without_replacement():
    """E = 3 members of values 0, 1, 2, Z = 2: the 3 subsets are equally likely, so the min is 1 a third of the time
    ({1, 2}) and never 2 (a subset with a member twice). Taking the first Z members always gives 0."""
    torch.manual_seed(0)
    q_next = torch.tensor([0.0, 1.0, 2.0]).view(3, 1, 1)
    draws = torch.stack([rlpd.subset_min_target(q_next, 2) for _ in range(600)]).flatten()
    assert set(draws.tolist()) == {0.0, 1.0}
    assert 0.25 < (draws == 1.0).float().mean() < 0.42


def test_td_target_subtracts_the_entropy_term():
    """y = r + gamma * mask * (Q' - alpha log pi(a'|s')); without backup_entropy y = r + gamma * mask * Q'."""
    r, mask, q, logp = torch.ones(2), torch.tensor([1.0, 0.0]), torch.full((2, 1), 10.0), torch.full((2, 1), -2.0)
    assert torch.allclose(rlpd.td_target(r, mask, q, logp, 0.5, 0.9, True), torch.tensor([[10.9], [1.0]]))
    assert torch.allclose(rlpd.td_target(r, mask, q, logp, 0.5, 0.9, False), torch.tensor([[10.0], [1.0]]))


def test_loss_values():
    """critic: mean over critics and batch; actor: mean (not min) over the ensemble; temperature: on alpha."""
    qs, y = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(2, 2, 1), torch.tensor([[0.0], [1.0]])
    assert rlpd.critic_loss(qs, y).item() == 5.0  # (1 + 1 + 9 + 9) / 4
    qs_pi = torch.tensor([0.0, 3.0, 3.0, 0.0, 6.0, 6.0]).view(3, 2, 1)  # mean over E: 3 and 3; min: 0 and 0
    assert rlpd.actor_loss(qs_pi, torch.tensor([[1.0], [2.0]]), 0.5).item() == -2.25  # mean(0.5 - 3, 1 - 3)
    log_alpha, logp = torch.tensor(np.log(0.1), requires_grad=True), torch.tensor([[-1.0], [-3.0]], requires_grad=True)
    loss = rlpd.temperature_loss(log_alpha, logp, -1.0)  # 0.1 * mean(1 + 1, 3 + 1) = 0.3
    loss.backward()
    assert abs(loss.item() - 0.3) < 1e-6 and abs(log_alpha.grad.item() - 0.3) < 1e-6 and logp.grad is None


def test_polyak_follows_the_updated_critic():
    """After every critic step: target <- target + tau (critic - target), with the critic after its Adam step."""
    torch.manual_seed(0)
    args = rlpd.Args(num_qs=2, num_min_qs=2, hidden=16, tau=0.5)
    actor = rlpd.Actor(5, 2, 16, -np.ones(2), np.ones(2))
    critic, target = rlpd.CriticEnsemble(5, 2, 2, 16), rlpd.CriticEnsemble(5, 2, 2, 16)
    target.load_state_dict(critic.state_dict())
    opt = torch.optim.Adam(critic.parameters(), lr=0.1)
    b = {"observations": torch.randn(8, 5), "actions": torch.rand(8, 2), "rewards": torch.randn(8),
         "next_observations": torch.randn(8, 5), "masks": torch.ones(8)}
    for _ in range(2):
        before = [p.detach().clone() for p in target.parameters()]
        rlpd.critic_update(critic, target, actor, opt, list(critic.parameters()), list(target.parameters()), b,
                           torch.tensor(0.2), args)
        for t0, t1, p in zip(before, target.parameters(), critic.parameters()):
            assert torch.allclose(t1, t0 + 0.5 * (p - t0), atol=1e-6)


def test_offline_data_masks_terminations_only_and_clips_actions():
    demos = {"observations": np.zeros((3, 2), np.float32), "next_observations": np.ones((3, 2), np.float32),
             "actions": np.array([[-1.0], [1.0], [0.5]], np.float32), "rewards": np.arange(3, dtype=np.float32),
             "terminations": np.array([0.0, 1.0, 0.0], np.float32), "truncations": np.array([1.0, 0.0, 0.0], np.float32)}
    d = rlpd.demo_arrays(demos)
    assert d["masks"].tolist() == [1.0, 0.0, 1.0]  # a truncation bootstraps
    assert np.allclose(d["actions"][:, 0], [-1 + 1e-5, 1 - 1e-5, 0.5]) and np.abs(d["actions"]).max() < 1


def run_main(monkeypatch, *flags, max_episode_steps=12):
    """main() on a tiny budget, in this process: Hopper episodes cut at max_episode_steps (so both truncations and
    terminations happen), every env step's (terminated, truncated), the online buffer, and the update calls in order."""
    steps, buffers, calls = [], [], []
    make_env, critic_update, actor_update = rlpd.make_env, rlpd.critic_update, rlpd.actor_temperature_update

    class Record(gym.Wrapper):
        def step(self, action):
            out = self.env.step(action)
            steps.append((out[2], out[3]))
            return out

    class Buffer(rlpd.ReplayBuffer):
        def __init__(self, *a):
            super().__init__(*a)
            buffers.append(self)

    def critic_step(critic, target, actor, opt, cp, tp, b, alpha, args):
        calls.append(("critic", b["observations"].clone(), b["is_offline"].mean().item()))
        return critic_update(critic, target, actor, opt, cp, tp, b, alpha, args)

    def actor_step(actor, critic, actor_opt, log_alpha, temp_opt, obs, alpha, target_entropy):
        calls.append(("actor", obs.clone(), None))
        return actor_update(actor, critic, actor_opt, log_alpha, temp_opt, obs, alpha, target_entropy)

    monkeypatch.setattr(rlpd, "make_env", lambda env_id, seed, *_: lambda: Record(make_env(env_id, seed, max_episode_steps)()))
    monkeypatch.setattr(rlpd, "ReplayBuffer", Buffer)
    monkeypatch.setattr(rlpd, "critic_update", critic_step)
    monkeypatch.setattr(rlpd, "actor_temperature_update", actor_step)
    monkeypatch.setattr(sys, "argv", ["rlpd.py", "--num-qs", "2", "--hidden", "16", "--batch-size", "8",
                                      "--eval-every", "1000", *flags])
    assert rlpd.main() == 0
    return steps, buffers[0], calls


def test_main_stores_masks_from_terminations_only(in_tmp, monkeypatch):
    steps, buffer, _ = run_main(monkeypatch, "--total-timesteps", "40", "--start-training", "40")
    term, trunc = np.array(steps).T
    assert term.any() and trunc.any() and buffer.size == 40
    assert buffer.mask[:40].tolist() == (1.0 - term).tolist()  # truncations bootstrap (mask 1)


def test_main_runs_utd_critic_steps_then_one_actor_step_on_the_last_slice(in_tmp, monkeypatch):
    """Per env step after start_training: utd critic steps on utd different slices, each a quarter offline (with
    --offline-ratio 0.25), then one actor + temperature step on the last slice's observations."""
    _, _, calls = run_main(monkeypatch, "--total-timesteps", "6", "--start-training", "4", "--utd", "3",
                           "--offline-ratio", "0.25")
    assert [c[0] for c in calls] == (["critic"] * 3 + ["actor"]) * 2
    for i in (0, 4):
        critic_calls, (_, actor_obs, _) = calls[i:i + 3], calls[i + 3]
        assert all(c[2] == 0.25 for c in critic_calls)
        assert not torch.equal(critic_calls[0][1], critic_calls[1][1])
        assert torch.equal(actor_obs, critic_calls[-1][1])

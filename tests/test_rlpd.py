"""RLPD: ensemble shapes, the subset-min target, symmetric sampling, a fixed-point fit, CLI runs and bad input."""
import glob
import os
import subprocess
import sys

import numpy as np
import torch

import rlpd
from conftest import ROOT


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
    b = rlpd.sample_batch(online, offline, 256, 20, 0.5, rng)
    assert b["observations"].shape == (20, 256, 2)
    assert torch.equal(b["is_offline"].mean(1), torch.full((20,), 0.5))
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

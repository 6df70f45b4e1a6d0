"""ConRFT: Karras schedule, identity at sigma_min, Cal-QL calibration, loss shapes, short offline convergence."""
import argparse
import glob
import os
import subprocess
import sys

import numpy as np
import torch

import conrft as C
from conftest import ROOT


def args(**kw):
    base = dict(num_sample_steps=1, gamma=0.95, cql_n_actions=4, cql_alpha=0.1, sigma_data=0.5)
    return argparse.Namespace(**(base | kw))


def test_karras_schedule_endpoints_and_order():
    s = C.karras_sigmas(40, 0.002, 80.0, 7.0)
    assert len(s) == 40 and abs(s[0].item() - 80.0) < 1e-3 and abs(s[-1].item() - 0.002) < 1e-6
    assert (s[1:] < s[:-1]).all()


def test_consistency_function_is_identity_at_sigma_min():
    torch.manual_seed(0)
    pol = C.ConsistencyPolicy(5, 2, 32, 0.002, 80.0, 0.5)
    x = torch.rand(16, 2) * 1.8 - 0.9
    out = pol(torch.randn(16, 5), x, torch.full((16, 1), 0.002))
    assert torch.allclose(out, x, atol=1e-6)
    c_skip, c_out = pol.scalings(torch.tensor(0.002))
    assert c_skip.item() == 1.0 and c_out.item() == 0.0


def test_calibrated_term_never_below_v_mu():
    q, mc = torch.randn(2, 8, 30), torch.randn(1, 8, 1)
    cal = C.calibrate(q, mc)
    assert (cal >= mc).all() and (cal >= q).all() and torch.equal(cal, torch.maximum(q, mc.expand_as(q)))


def test_mc_returns_stop_at_episode_ends():
    r = np.array([0, 0, 1, 0, 1], np.float32)
    ends = np.array([0, 0, 1, 0, 1], np.float32)
    g = C.mc_returns(r, ends, 0.5)
    assert np.allclose(g, [0.25, 0.5, 1.0, 0.5, 1.0])


def test_loss_shapes():
    torch.manual_seed(0)
    sig = C.karras_sigmas(10, 0.002, 80.0, 7.0)
    pol, critic, target = C.ConsistencyPolicy(5, 2, 32, 0.002, 80.0, 0.5), C.CriticEnsemble(5, 2, 2, 32), C.CriticEnsemble(5, 2, 2, 32)
    b = {"observations": torch.randn(8, 5), "actions": torch.rand(8, 2) * 2 - 1, "rewards": torch.zeros(8),
         "next_observations": torch.randn(8, 5), "masks": torch.ones(8), "mc_returns": torch.zeros(8)}
    assert critic(b["observations"], b["actions"]).shape == (2, 8, 1)
    assert critic(b["observations"], torch.rand(8, 3, 2)).shape == (2, 8, 3)
    loss, td, cql = C.calql_loss(critic, target, pol, b, sig, args())
    assert loss.shape == td.shape == cql.shape == ()
    p_loss, l_c, q = C.policy_loss(pol, critic, b["observations"], b["actions"], sig, args(), 1.0, 0.1)
    assert p_loss.shape == () and torch.isfinite(p_loss)
    assert pol.sample(b["observations"], sig, steps=3).shape == (8, 2)


def test_offline_steps_lower_consistency_loss_and_move_actions_to_demos():
    torch.manual_seed(0)
    d = np.load(os.path.join(ROOT, "data", "metaworld-reach-v3.npz"))
    obs, act = torch.as_tensor(d["observations"][:1000]), torch.as_tensor(np.clip(d["actions"][:1000], -0.999, 0.999))
    sig = C.karras_sigmas(40, 0.002, 80.0, 7.0)
    pol = C.ConsistencyPolicy(39, 4, 128, 0.002, 80.0, 0.5)
    opt = torch.optim.Adam(pol.parameters(), lr=1e-3)

    def stats():
        torch.manual_seed(1)
        with torch.no_grad():
            loss = np.mean([C.consistency_loss(pol, obs, act, sig, 0.5).item() for _ in range(5)])
            err = (pol.sample(obs, sig, noise=False) - act).abs().mean().item()
        return loss, err

    loss0, err0 = stats()
    for _ in range(1500):
        idx = torch.randint(len(obs), (256,))
        loss = C.consistency_loss(pol, obs[idx], act[idx], sig, 0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
    loss1, err1 = stats()
    assert loss1 < 0.5 * loss0 and err1 < 0.6 * err0, (loss0, loss1, err0, err1)


def test_cli_offline_online_bc_only_and_sac(in_tmp):
    base = [sys.executable, os.path.join(ROOT, "conrft.py"), "--env-id", "metaworld/reach-v3", "--offline-steps", "40", "--online-steps",
            "60", "--eval-every", "60", "--eval-episodes", "1", "--cql-n-actions", "2", "--hidden", "64", "--batch-size", "32"]
    # sac runs past the first 500-step episode, so Stage II updates run too
    sac = ["--algo", "sac", "--intervene-prob", "0.2", "--online-steps", "520"]
    for extra in (["--intervene-prob", "0.2"], ["--algo", "bc-only"], sac):
        out = subprocess.run(base + extra, capture_output=True, text=True, timeout=240)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "after Stage I" in out.stdout
    saved = torch.load(glob.glob("runs/*__sac__*/model.pt")[0], weights_only=False)
    assert abs(float(saved["log_alpha"]) - np.log(0.01)) > 1e-6  # SAC's Stage II updates ran (the temperature moved)


def test_gaussian_actor_log_prob_and_sac_losses():
    torch.manual_seed(0)
    actor, critic, target = C.GaussianActor(5, 3, 32), C.CriticEnsemble(5, 3, 2, 32), C.CriticEnsemble(5, 3, 2, 32)
    obs = torch.randn(16, 5)
    a, logp = actor(obs)
    assert a.shape == (16, 3) and logp.shape == (16,) and a.abs().max() < 1
    # the log-probability of the sampled action, recomputed from the action alone, matches the sampler's
    assert torch.allclose(actor.log_prob(obs, a.detach()), logp.detach(), atol=1e-2)
    assert actor.sample(obs, noise=False).shape == (16, 3)
    b = {"observations": obs, "actions": torch.rand(16, 3) * 2 - 1, "rewards": torch.ones(16), "next_observations": torch.randn(16, 5),
         "masks": torch.ones(16)}
    log_alpha = torch.zeros((), requires_grad=True)
    c = C.sac_critic_loss(actor, critic, target, b, 0.95)
    act_l, t = C.sac_actor_losses(actor, critic, log_alpha, obs, -1.5)
    assert c.dim() == act_l.dim() == t.dim() == 0 and torch.isfinite(c + act_l + t)
    t.backward()
    assert log_alpha.grad is not None and critic.l1.weight.grad is None  # the temperature loss touches only alpha


def test_cli_runs_on_hopper_with_the_shipped_expert_intervening(in_tmp):
    cmd = [sys.executable, os.path.join(ROOT, "conrft.py"), "--env-id", "Hopper-v4", "--algo", "sac", "--offline-steps", "30",
           "--online-steps", "1000", "--eval-every", "1000", "--eval-episodes", "1", "--cql-n-actions", "2", "--hidden", "64",
           "--batch-size", "32", "--intervene-prob", "0.1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    metrics = open(glob.glob("runs/Hopper-v4__conrft__sac__*/metrics.csv")[0]).read()
    rates = [float(line.split(",")[2]) for line in metrics.splitlines() if ",charts/intervention_rate," in line]
    assert "eval/return" in metrics and len(rates) == 1 and 0 < rates[0] < 1  # the expert acted, but not always

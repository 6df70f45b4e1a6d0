"""IN-RIL (both forms): loss shapes, gradient surgery, dynamic m, zero-init residual, BC convergence, CLI runs."""
import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import inril_pcgrad as P
import inril_residual as R
from conftest import ROOT

DEMOS = os.path.join(ROOT, "data", "Hopper-v4-medium.npz")


def demo_tensors(n=2048):
    d = np.load(DEMOS)
    return torch.as_tensor(d["observations"][:n]), torch.as_tensor(d["actions"][:n])


def test_projection_orthogonal_when_conflicting():
    g_rl, g_il = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 1.0, 1.0])
    assert torch.dot(g_rl, g_il) < 0
    g, hit = P.project_conflicting(g_rl, g_il)
    assert hit and abs(torch.dot(g, g_il).item()) < 1e-6
    assert not torch.allclose(g, g_rl)


def test_projection_leaves_aligned_gradient_unchanged():
    g_rl, g_il = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([0.0, 1.0, 1.0])
    g, hit = P.project_conflicting(g_rl, g_il)
    assert not hit and torch.equal(g, g_rl)


def test_grad_cosine_and_dynamic_m_direction():
    assert P.grad_cosine(torch.tensor([1.0, 0.0]), torch.tensor([-2.0, 0.0])) == pytest.approx(-1.0)
    assert P.dynamic_m(10, -1.0, 2, 30) == 30 and P.dynamic_m(10, 1.0, 2, 30) == 3 and P.dynamic_m(10, 0.0, 2, 30) == 10
    assert P.dynamic_m(10, -0.5, 2, 30) > P.dynamic_m(10, 0.5, 2, 30)  # conflict -> more RL steps per IL step
    assert P.dynamic_m(10, -1.0, 2, 20) == 20


def test_loss_shapes():
    obs, act = demo_tensors(64)
    pol = P.Policy(11, 3, obs.mean(0).numpy(), obs.std(0).numpy() + 1e-3, 0.1)
    l_il = P.il_loss(pol, obs, act)
    assert l_il.shape == () and torch.isfinite(l_il)
    logp = pol.dist(obs).log_prob(act).sum(-1)
    assert logp.shape == (64,)
    loss, kl = P.ppo_loss(logp, logp.detach(), torch.randn(64), 0.2)
    assert loss.shape == () and kl.item() == pytest.approx(0.0, abs=1e-6)
    # il_loss never moves the std: its gradient on log_std is absent
    g = torch.autograd.grad(l_il, [pol.log_std], allow_unused=True)[0]
    assert g is None
    adv, ret = P.gae(torch.ones(5, 2), torch.zeros(5, 2), torch.zeros(5, 2), torch.zeros(5, 2), 0.99, 0.95)
    assert adv.shape == (5, 2) and adv[0, 0] > adv[-1, 0] == 1.0


def test_chunk_targets_stay_inside_episodes():
    demos = {"actions": np.arange(5, dtype=np.float32)[:, None], "terminations": np.array([0, 0, 1, 0, 0], np.float32),
             "truncations": np.array([0, 0, 0, 0, 1], np.float32)}
    t = P.chunk_targets(demos, 3)
    assert t.tolist() == [[0, 1, 2], [1, 2, 2], [2, 2, 2], [3, 4, 4], [4, 4, 4]]


def test_zero_init_residual_reproduces_base():
    obs, _ = demo_tensors(32)
    m, s = obs.mean(0).numpy(), obs.std(0).numpy() + 1e-3
    base, res = R.BasePolicy(11, 3, m, s), R.Residual(11, 3, m, s, 0.0)
    with torch.no_grad():
        assert torch.equal(R.act_combined(base, res, obs, 0.1), base(obs))
    # and the residual can learn: its last layer gets a nonzero gradient
    loss = res.mean(obs, base(obs).detach()).sum()
    loss.backward()
    assert res.r[-1].weight.grad.abs().sum() > 0


def test_bc_cuts_the_loss_quickly():
    torch.manual_seed(0)
    obs, act = demo_tensors(4096)
    pol = P.Policy(11, 3, obs.mean(0).numpy(), obs.std(0).numpy() + 1e-3, 0.1)
    opt = torch.optim.Adam(pol.mu.parameters(), lr=1e-3)
    first = P.il_loss(pol, obs, act).item()
    for _ in range(300):
        idx = torch.randint(len(obs), (256,))
        loss = P.il_loss(pol, obs[idx], act[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert P.il_loss(pol, obs, act).item() < 0.2 * first


@pytest.mark.parametrize("script,extra", [("inril_pcgrad.py", ["--dynamic-m"]), ("inril_residual.py", ["--dynamic-m"]),
                                          ("inril_pcgrad.py", ["--il-mode", "regularize", "--chunk-size", "2"])])
def test_cli_end_to_end(in_tmp, script, extra):
    cmd = [sys.executable, os.path.join(ROOT, script), "--total-timesteps", "4096", "--num-envs", "4", "--num-steps", "256",
           "--bc-steps", "500", "--eval-every", "2048", "--eval-episodes", "1"] + extra
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    run = glob.glob(str(in_tmp / "runs" / "*"))[0]
    assert os.path.exists(os.path.join(run, "model.pt"))
    rows = open(os.path.join(run, "metrics.csv")).read()
    assert "eval/return" in rows and "charts/m" in rows and "losses/policy" in rows
    if "regularize" not in extra:
        assert "losses/il" in rows and "charts/rho" in rows


def test_cli_bad_demo_file_is_one_sentence(in_tmp):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "inril_residual.py"), "--env-id", "Walker2d-v4", "--demo-path",
                          DEMOS], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "holds observations of shape (11,)" in out.stderr

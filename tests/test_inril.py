"""IN-RIL (both forms): the losses' values, gradient surgery and what it guarantees after Adam, separate IL/RL
optimizers, dynamic m and its EMA, the ResiP-style residual, sparse MetaWorld reward, few demos, BC convergence, CLI
runs, and main() itself on a tiny budget (the update rule as it runs: which step trains which network, how often)."""
import csv
import glob
import inspect
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import gymnasium as gym
import torch

import inril_pcgrad as P
import inril_residual as R
from conftest import ROOT

DEMOS = os.path.join(ROOT, "data", "Hopper-v4-medium.npz")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread in these tests (tiny networks; a shared machine): two threads made BC here 5x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def test_rho_cosine_and_dynamic_m_direction():
    w = torch.nn.Parameter(torch.zeros(2))
    assert P.measure_rho((torch.tensor([1.0, 0.0]) * w).sum(), (torch.tensor([-2.0, 0.0]) * w).sum(), [w]) == pytest.approx(-1.0)
    assert P.dynamic_m(10, -1.0, 2, 30) == 30 and P.dynamic_m(10, 1.0, 2, 30) == 3 and P.dynamic_m(10, 0.0, 2, 30) == 10
    assert P.dynamic_m(10, -0.5, 2, 30) > P.dynamic_m(10, 0.5, 2, 30)  # conflict -> more RL steps per IL step
    assert P.dynamic_m(10, -1.0, 2, 20) == 20


@pytest.mark.parametrize("mod", [P, R])
def test_docstring_map_points_to_code(mod):
    """Every name the module docstring's equations -> code map points to (`-> name()`, or a class) is in the file."""
    pointers = re.findall(r"-> (.+)", mod.__doc__.split("Equations / idea -> code", 1)[1])
    names = [n for p in pointers for n in re.findall(r"(\w+)\(\)|\b([A-Z]\w+)\b", p) for n in n if n]
    assert len(names) >= 10
    assert [n for n in names if not callable(getattr(mod, n, None))] == []


def test_loss_shapes():
    obs, act = demo_tensors(64)
    pol = P.Policy(11, 3, obs.mean(0).numpy(), obs.std(0).numpy() + 1e-3, 0.1)
    l_il = P.il_loss(pol, obs, act)
    assert l_il.shape == () and torch.isfinite(l_il)
    logp = pol.dist(obs).log_prob(act).sum(-1)
    assert logp.shape == (64,)
    loss, kl = P.rl_loss(pol, {"obs": obs, "act": act, "logp": logp.detach(), "adv": torch.randn(64)}, 0.2)
    assert loss.shape == () and kl.item() == pytest.approx(0.0, abs=1e-6)
    # il_loss never moves the std: its gradient on log_std is absent
    g = torch.autograd.grad(l_il, [pol.log_std], allow_unused=True)[0]
    assert g is None
    adv, ret = P.gae(torch.ones(5, 2), torch.zeros(5, 2), torch.zeros(5, 2), torch.zeros(5, 2), 0.99, 0.95)
    assert adv.shape == (5, 2) and adv[0, 0] > adv[-1, 0] == 1.0


def test_losses_values():
    """squared_error sums over action dims and averages over the batch; L_IL is the Gaussian NLL (std 1: half the
    squared error plus 0.5 log(2 pi) per dim) in the one-network file and half the squared error of the base in the
    residual file; the critic's loss is 0.5 (V - R)^2."""
    pred, act = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert P.squared_error(pred, act).item() == pytest.approx((5.0 + 2.0) / 2)
    obs, a = demo_tensors(16)
    pol = P.Policy(11, 3, obs.mean(0).numpy(), obs.std(0).numpy() + 1e-3, 1.0)
    want = 0.5 * P.squared_error(pol(obs), a) + 1.5 * np.log(2 * np.pi)
    assert P.il_loss(pol, obs, a).item() == pytest.approx(want.item(), rel=1e-5)
    base = R.BasePolicy(11, 3, obs.mean(0).numpy(), obs.std(0).numpy() + 1e-3)
    assert R.il_loss(base, obs, a).item() == pytest.approx(0.5 * R.squared_error(base(obs), a).item(), rel=1e-6)
    critic = P.Critic(11, obs.mean(0).numpy(), obs.std(0).numpy() + 1e-3)
    ret = torch.randn(16)
    want = 0.5 * ((critic(obs) - ret) ** 2).mean()
    assert P.value_loss(critic, {"obs": obs, "ret": ret}).item() == pytest.approx(want.item())


def test_clipped_surrogate_clips_the_ratio():
    """Ratios 1.5 and 0.5 with advantages +1 and -1 (normalised to +-1/sqrt(2)) and clip 0.2: the pessimistic term is
    the clipped one in both, so L = mean(-0.707 * 1.2, 0.707 * 0.8); approx KL = mean((r - 1) - log r)."""
    new_logp, old_logp = torch.log(torch.tensor([1.5, 0.5])), torch.zeros(2)
    loss, kl = P.clipped_surrogate(new_logp, old_logp, torch.tensor([1.0, -1.0]), 0.2)
    a = 1 / np.sqrt(2)
    assert loss.item() == pytest.approx((-a * 1.2 + a * 0.8) / 2, rel=1e-5)
    assert kl.item() == pytest.approx(((0.5 - np.log(1.5)) + (-0.5 - np.log(0.5))) / 2, rel=1e-5)


def test_gae_cuts_at_episode_ends_and_bootstraps():
    """One env, 3 steps, an episode ends at step 1 (done): the advantage there is its own TD error (nothing after the
    end flows back), and the last step bootstraps from next_values."""
    gamma, lam = 0.9, 0.5
    rew, val = torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[0.5], [0.2], [0.1]])
    next_val, done = torch.tensor([[0.2], [0.0], [4.0]]), torch.tensor([[0.0], [1.0], [0.0]])
    adv, ret = P.gae(rew, val, next_val, done, gamma, lam)
    d = rew + gamma * next_val - val  # TD errors
    want = [d[0] + gamma * lam * d[1], d[1], d[2]]
    assert torch.allclose(adv, torch.stack(want), atol=1e-6) and torch.allclose(ret, adv + val)


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


SPARSE = ["--env-id", "metaworld/reach-v3", "--sparse-reward", "--num-demo-episodes", "3", "--dynamic-m",
          "--total-timesteps", "2048", "--num-envs", "2", "--eval-every", "100000"]  # the later flags win


@pytest.mark.parametrize("script,extra", [("inril_pcgrad.py", ["--dynamic-m"]), ("inril_residual.py", SPARSE),
                                          ("inril_pcgrad.py", ["--il-mode", "regularize", "--chunk-size", "2"])])
def test_cli_end_to_end(in_tmp, script, extra):
    cmd = [sys.executable, os.path.join(ROOT, script), "--total-timesteps", "4096", "--num-envs", "4",
           "--num-steps", "256",
           "--bc-steps", "500", "--eval-every", "2048", "--eval-episodes", "1", "--critic-warmup-iters", "1"] + extra
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    run = glob.glob(str(in_tmp / "runs" / "*"))[0]
    assert os.path.exists(os.path.join(run, "model.pt"))
    rows = open(os.path.join(run, "metrics.csv")).read()
    assert "eval/return" in rows and "losses/policy" in rows
    assert "nan" not in out.stdout and "nan" not in rows  # a run shows only what the env has (no success flag: none)
    if "regularize" not in extra:
        assert "losses/il" in rows and "losses/il_mse" in rows and "charts/rho" in rows and "charts/m" in rows
    else:  # no interleaving: no m(t) to log
        assert "charts/m" not in rows
    if script == "inril_pcgrad.py" and "regularize" not in extra:
        assert "charts/conflict_rate" in rows and "charts/step_conflict_rate" in rows
    if "--sparse-reward" in extra:  # 3 demo episodes cloned; episodes end in 500 steps, so some finish
        assert "eval/success" in rows and "charts/episodic_success" in rows
        assert "(3 demo episodes" in out.stdout


@pytest.mark.parametrize("extra,message", [(["--env-id", "Walker2d-v4", "--demo-path", DEMOS],
                                            "holds observations of shape (11,)"),
                                           (["--sparse-reward"], "--sparse-reward needs a MetaWorld env")])
def test_cli_bad_input_is_one_sentence(in_tmp, extra, message):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "inril_residual.py")] + extra,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert message in out.stderr


# ---- separate optimizers; what the surgery guarantees after Adam ----
def toy_rl_steps(step_fn, steps=30):
    """theta in R^8 under Adam; each step a fresh 'demo minibatch' L_IL = 0.5 ||theta - c||^2 and an RL loss w . theta
    that pushes along e_0. Returns g_IL . delta (delta = the change Adam applied) for every step."""
    torch.manual_seed(0)
    theta = torch.nn.Parameter(torch.zeros(8))
    opt = torch.optim.Adam([theta], lr=0.1)
    dots = []
    for _ in range(steps):
        c, w = 0.5 * torch.randn(8), torch.randn(8) + 3.0 * torch.eye(8)[0]
        l_il, l_rl = 0.5 * ((theta - c) ** 2).sum(), (w * theta).sum()
        g_il, before = P.flat_grad(l_il, [theta]), theta.detach().clone()
        step_fn(l_rl, l_il, [theta], opt)
        dots.append(float(g_il @ (theta.detach() - before)))
    return np.array(dots)


def pcgrad_then_adam(l_rl, l_il, params, opt):
    """Surgery on the raw gradients only: PCGrad, then Adam's step as it comes (no projection of the applied step)."""
    g, _ = P.project_conflicting(P.flat_grad(l_rl, params), P.flat_grad(l_il, params))
    params[0].grad = g.clone()
    opt.step()


def test_projected_rl_step_never_raises_il_loss_to_first_order():
    """What is tested: for every RL step, with g_IL = grad L_IL on that step's demo minibatch at theta before the step
    and delta = theta_after - theta_before (the change Adam actually applied), g_IL . delta <= 0, i.e. the first-order
    change of L_IL is not positive. The control shows that PCGrad on the raw gradients alone does not give this under
    Adam (momentum, per-coordinate scaling), so the test fails if rl_step() loses its projection of the applied step."""
    dots = toy_rl_steps(lambda l_rl, l_il, params, opt: P.rl_step(l_rl, l_il, params, opt, 1e9, project_step=True))
    assert (dots <= 1e-6).all(), dots
    assert (toy_rl_steps(pcgrad_then_adam) > 1e-3).sum() >= 10  # the control: raw-gradient PCGrad breaks it


def test_no_project_step_is_pcgrad_then_adam():
    """--no-project-step turns off (3) alone: rl_step then takes exactly the steps of PCGrad followed by a plain Adam
    step, and many of them go uphill on L_IL to first order (what (3) removes)."""
    off = toy_rl_steps(lambda l_rl, l_il, params, opt: P.rl_step(l_rl, l_il, params, opt, 1e9, project_step=False))
    assert np.allclose(off, toy_rl_steps(pcgrad_then_adam)) and (off > 1e-3).sum() >= 10
    with pytest.raises(SystemExit, match="--project-step acts on the surgery only"):
        P.Args(project_step=True, il_mode="none")


def test_main_passes_project_step(tmp_path, monkeypatch):
    """main() hands --project-step / --no-project-step to every RL step of the surgery; without either, the paper's
    surgery (no projection of the applied step)."""
    seen, rl_step = [], P.rl_step
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(P, "rl_step", lambda *a: seen.append(a[5]) or rl_step(*a))
    threads = torch.get_num_threads()
    for flags in ([], ["--project-step"], ["--no-project-step"]):
        monkeypatch.setattr(sys, "argv", ["inril_pcgrad", *TINY, "--total-timesteps", "64", *flags])
        try:
            assert P.main() == 0
        finally:
            torch.set_num_threads(threads)
    assert seen == [False] * 4 + [True] * 4 + [False] * 4


def test_rl_step_guarantee_on_the_policy_and_separate_adam_states():
    obs, act = demo_tensors(256)
    torch.manual_seed(0)
    pol = P.Policy(11, 3, obs.mean(0).numpy(), obs.std(0).numpy() + 1e-3, 0.5)
    params = list(pol.parameters())
    rl_opt, il_opt = torch.optim.Adam(params, lr=1e-3), torch.optim.Adam(params, lr=1e-3)
    for i in range(6):
        a = act[:128] + 0.3 * torch.randn(128, 3)
        logp = pol.dist(obs[:128]).log_prob(a).sum(-1)
        l_rl, _ = P.clipped_surrogate(logp, logp.detach(), torch.randn(128), 0.2)
        l_il = P.il_loss(pol, obs[128:], act[128:])
        g_il, before = P.flat_grad(l_il, params), torch.cat([p.detach().reshape(-1) for p in params])
        P.rl_step(l_rl, l_il, params, rl_opt, 0.5, project_step=True)
        delta = torch.cat([p.detach().reshape(-1) for p in params]) - before
        assert float(g_il @ delta) <= 1e-6 * float(g_il.norm() * delta.norm())
        # an IL step moves theta by its own Adam state and leaves the RL optimizer's moments as they were
        moments = [rl_opt.state[p]["exp_avg"].clone() for p in params]
        P.il_step(P.il_loss(pol, obs[:128], act[:128]), params, il_opt, 0.5)
        assert all(torch.equal(m, rl_opt.state[p]["exp_avg"]) for m, p in zip(moments, params))
        assert il_opt.state[params[-1]]["step"] == i + 1


# ---- rho convention, one EMA of rho per cycle in both files ----
def test_measure_rho_sign_convention():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    l_il = ((w - 1) ** 2).sum()
    assert P.measure_rho(l_il, l_il * 3, [w]) == pytest.approx(1.0)  # aligned: positive
    assert R.measure_rho(l_il, -l_il, [w]) == pytest.approx(-1.0)  # conflict: negative


@pytest.mark.parametrize("mod", [P, R])
def test_cycle_reads_as_the_update_rule_in_both_files(mod):
    """rl_step, then since_il += 1; at since_il >= m_t: measure_rho, one EMA update of rho_bar, il_step, m_t; in
    this order, once each, in both files (the two files must smooth m(t) the same way)."""
    src = inspect.getsource(mod.main)
    lines = ["rl_step(l_rl", "since_il += 1", "since_il >= m_t", "rho = measure_rho(",
             "rho_bar = 0.9 * rho_bar + 0.1 * rho",
             "il_step(", "since_il = 0\n", "m_t = dynamic_m("]
    assert all(src.count(x) == 1 for x in lines), [x for x in lines if src.count(x) != 1]
    assert [src.index(x) for x in lines] == sorted(src.index(x) for x in lines)


# ---- the residual ----
def test_residual_defaults_follow_resip_on_metaworld_and_explore_on_mujoco():
    a = R.Args(env_id="metaworld/pick-place-v3")  # ResiP's residual, made for small corrections in manipulation
    assert a.residual_log_std == -1.5 and a.residual_scale == 0.1 and a.residual_l2 == 0.01 and a.residual_l1 == 0.0
    assert a.critic_warmup_iters == 5 and P.Args().critic_warmup_iters == 5
    assert a.residual_scale * np.exp(a.residual_log_std) < 0.03  # exploration std in action units: a small correction
    h = R.Args(env_id="Hopper-v4")  # absolute torques: std 0.5 in action units, no penalty (benchmarks/inril/residual_sweep)
    assert (h.residual_scale, h.residual_log_std, h.residual_l2) == (1.0, -0.6931, 0.0)
    assert abs(h.residual_scale * np.exp(h.residual_log_std) - 0.5) < 1e-4
    given = R.Args(env_id="Hopper-v4", residual_scale=0.1, residual_log_std=-1.5, residual_l2=0.01)  # flags win
    assert (given.residual_scale, given.residual_log_std, given.residual_l2) == (0.1, -1.5, 0.01)


def test_residual_penalty_and_critic_input():
    r = torch.tensor([[0.5, -1.0], [0.0, 2.0]], requires_grad=True)
    pen = R.residual_penalty(r, 0.1, 0.01)
    assert pen.item() == pytest.approx(0.1 * 3.5 / 4 + 0.01 * 5.25 / 4)
    pen.backward()
    assert (torch.sign(r.grad) == torch.sign(r.detach())).all()  # a step on the penalty shrinks the residual
    obs, act = demo_tensors(16)
    critic = R.Critic(11, 3, obs.mean(0).numpy(), obs.std(0).numpy() + 1e-3)
    assert critic(obs, act).shape == (16,) and not torch.equal(critic(obs, act), critic(obs, act + 1))
    res = R.Residual(11, 3, obs.mean(0).numpy(), obs.std(0).numpy() + 1e-3, -1.5)
    torch.nn.init.normal_(res.r[-1].weight, std=0.1)  # the residual sees the base action too
    assert not torch.allclose(res.mean(obs, act), res.mean(obs, act + 1))


def test_residual_rl_loss_is_ppo_plus_penalty():
    """The residual's L_RL: PPO's clipped surrogate on the residual's own density of u, plus the penalty on its mean."""
    torch.manual_seed(0)
    obs, act = demo_tensors(64)
    res = R.Residual(11, 3, obs.mean(0).numpy(), obs.std(0).numpy() + 1e-3, -1.5)
    with torch.no_grad():
        res.r[-1].weight.normal_(0, 0.1)
    mb = {"obs": obs, "a_base": act, "u": torch.randn(64, 3), "logp": torch.randn(64) - 3, "adv": torch.randn(64)}
    l_rl, surrogate, _ = R.rl_loss(res, mb, 0.2, 0.0, 0.01)
    assert torch.allclose(l_rl - surrogate, R.residual_penalty(res.mean(obs, act), 0.0, 0.01))
    new_logp = res.dist(obs, act).log_prob(mb["u"]).sum(-1)
    assert torch.allclose(surrogate, R.clipped_surrogate(new_logp, mb["logp"], mb["adv"], 0.2)[0])


def test_combined_rl_loss_uses_the_residual_density_in_action_units():
    """At the rollout's own policy the combined policy's density of the executed action equals the residual's density
    of u, converted to action units (- act_dim * log(scale)): the ratio is 1, so the approximate KL is 0."""
    obs, _ = demo_tensors(32)
    m, s = obs.mean(0).numpy(), obs.std(0).numpy() + 1e-3
    torch.manual_seed(0)
    base, res = R.BasePolicy(11, 3, m, s), R.Residual(11, 3, m, s, -1.5)
    torch.nn.init.normal_(res.r[-1].weight, std=0.1)
    with torch.no_grad():
        a_base = base(obs)
        d = res.dist(obs, a_base)
        u = d.sample()
        mb = {"obs": obs, "a_base": a_base, "u": u, "logp": d.log_prob(u).sum(-1), "adv": torch.randn(32)}
        assert R.combined_rl_loss(base, res, mb, 0.1, 0.2)[1].item() == pytest.approx(0.0, abs=1e-5)


# ---- the regime: sparse success reward, few demos ----
class OneStepSuccess(gym.Env):
    """Succeeds on its third step; dense reward 5 every step."""
    observation_space, action_space = gym.spaces.Box(-1, 1, (1,)), gym.spaces.Box(-1, 1, (1,))

    def reset(self, seed=None, options=None):
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(1, np.float32), 5.0, self.t == 3, False, {"success": float(self.t == 3)}


@pytest.mark.parametrize("mod", [P, R])
def test_success_reward_and_first_episodes(mod):
    env = mod.TrainEnv(OneStepSuccess(), 1, sparse=True)
    env.reset()
    assert [env.step(np.zeros(1))[1] for _ in range(3)] == [0.0, 0.0, 1.0]
    demos = {"actions": np.arange(6, dtype=np.float32)[:, None],
             "terminations": np.array([0, 1, 0, 0, 1, 1], np.float32),
             "truncations": np.zeros(6, np.float32)}
    assert mod.first_episodes(demos, 2)["actions"].ravel().tolist() == [0, 1, 2, 3, 4]
    assert mod.first_episodes(demos, 0) is demos
    with pytest.raises(SystemExit, match="more episodes than the demo file holds"):
        mod.first_episodes(demos, 4)


def test_compiled_losses_equal_eager_in_both_files():
    """--compile wraps the same loss functions: values and gradients match eager."""
    torch.manual_seed(0)
    obs, act = demo_tensors(64)
    m, s = obs.mean(0).numpy(), obs.std(0).numpy() + 1e-3
    adv, ret, old = torch.randn(64), torch.randn(64), torch.randn(64) - 3
    pol, pcritic = P.Policy(11, 3, m, s, 0.5), P.Critic(11, m, s)
    res, rcritic = R.Residual(11, 3, m, s, -1.5), R.Critic(11, 3, m, s)
    with torch.no_grad():
        res.r[-1].weight.normal_(0, 0.1)
    u = torch.randn(64, 3)
    mb = {"obs": obs, "act": act, "a_base": act, "u": u, "logp": old, "adv": adv, "ret": ret}
    cases = [(P.value_loss, pcritic, (pcritic, mb)), (P.rl_loss, pol, (pol, mb, 0.2)),
             (R.value_loss, rcritic, (rcritic, mb)), (R.rl_loss, res, (res, mb, 0.2, 0.0, 0.01))]
    torch._dynamo.reset()
    for fn, net, inputs in cases:
        outs = []
        for f in (fn, torch.compile(fn)):
            net.zero_grad()
            out = f(*inputs)
            loss = out[0] if isinstance(out, tuple) else out
            loss.backward()
            outs.append([loss.detach()] + [p.grad.clone() for p in net.parameters() if p.grad is not None])
        assert len(outs[0]) == len(outs[1]) > 1
        for a, b in zip(*outs):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), fn.__name__


# ---- main() itself, on a tiny budget, with every RL and IL step recorded ----
TINY = ["--total-timesteps", "96", "--num-envs", "1", "--num-steps", "32", "--bc-steps", "2", "--eval-every", "1000000",
        "--eval-episodes", "1", "--critic-warmup-iters", "1", "--update-epochs", "1", "--num-minibatches", "4",
        "--m", "2", "--dynamic-m", "--target-kl", "1e9", "--actor-lr", "3e-4", "--il-lr", "1e-4"]  # 3 rollouts, 1 value-only


@pytest.fixture(scope="module", params=[P, R], ids=["pcgrad", "residual"])
def tiny_run(request, tmp_path_factory):
    """Run main() of one file in this process and record, in order: every rl_step / il_step call (its optimizer and
    which networks it changed), every rho measured, and (residual file) each rollout step's base action, u and the
    actions the envs executed. Returns (module, record, metrics rows)."""
    mod, rec = request.param, {"steps": [], "rho": [], "sampled": [], "executed": []}
    nets = {}
    flat = lambda net: torch.cat([p.detach().reshape(-1).clone() for p in net.parameters()])

    def recorded(kind, fn):
        def step(*a, **k):
            before = {name: flat(net) for name, net in nets.items()}
            out = fn(*a, **k)
            changed = sorted(name for name, net in nets.items() if not torch.equal(before[name], flat(net)))
            opt = next(x for x in a if isinstance(x, torch.optim.Optimizer))
            rec["steps"].append((kind, opt, changed))
            return out
        return step

    def keep(name, cls):
        init = cls.__init__

        def __init__(self, *a, **k):
            init(self, *a, **k)
            nets[name] = self
        return __init__

    def measure_rho(*a):
        rec["rho"].append(mod_measure_rho(*a))
        return rec["rho"][-1]

    mod_measure_rho, threads = mod.measure_rho, torch.get_num_threads()
    folder = tmp_path_factory.mktemp(mod.__name__)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        scale = ["--residual-scale", "0.1", "--residual-log-std", "-1.5"] if mod is R else []  # scale != 1: visible
        mp.setattr(sys, "argv", [mod.__name__, *TINY, *scale])
        mp.setattr(mod, "rl_step", recorded("RL", mod.rl_step))
        mp.setattr(mod, "il_step", recorded("IL", mod.il_step))
        mp.setattr(mod, "measure_rho", measure_rho)
        for name in ("Policy", "BasePolicy", "Residual"):
            if hasattr(mod, name):
                mp.setattr(getattr(mod, name), "__init__", keep(name, getattr(mod, name)))
        if mod is R:
            dist, env_step = R.Residual.dist, R.TrainEnv.step

            def rollout_dist(self, obs, a_base):
                d = dist(self, obs, a_base)
                if not torch.is_grad_enabled():  # the rollout: keep what it samples
                    sample = d.sample
                    d.sample = lambda: rec["sampled"].append((a_base.clone(), sample())) or rec["sampled"][-1][1]
                return d

            mp.setattr(R.Residual, "dist", rollout_dist)
            mp.setattr(R.TrainEnv, "step", lambda self, action: rec["executed"].append(np.array(action)) or
                       env_step(self, action))
        try:
            assert mod.main() == 0
        finally:
            torch.set_num_threads(threads)
    rows = list(csv.DictReader(open(glob.glob(str(folder / "runs" / "*" / "metrics.csv"))[0])))
    return mod, rec, rows


def test_main_one_il_step_after_every_m_rl_steps(tiny_run):
    """3 rollouts, the first value-only, 4 minibatches each: 8 RL steps, and an IL step after every m(t)-th, m(t) from
    the rhos measured so far (m = 2, m_min 2): the paper's rule RL RL IL RL RL IL ..., counted over the whole run."""
    mod, rec, _ = tiny_run
    kinds = [kind for kind, _, _ in rec["steps"]]
    want, since, m_t, rho_bar, rhos = [], 0, 2, 0.0, iter(rec["rho"] + [0.0] * 8)  # (padded: fails on the compare)
    for _ in range(8):
        want.append("RL")
        since += 1
        if since >= m_t:
            want.append("IL")
            since, rho_bar = 0, 0.9 * rho_bar + 0.1 * next(rhos)
            m_t = mod.dynamic_m(2, rho_bar, 2, 30)
    assert kinds == want and kinds.count("IL") >= 2


def test_main_il_and_rl_have_own_optimizers_and_networks(tiny_run):
    """Every RL step goes through one Adam (lr alpha_RL = --actor-lr), every IL step through another (--il-lr); in the
    residual file the RL steps change only the residual and the IL steps only the base."""
    mod, rec, _ = tiny_run
    rl = {id(opt): opt for kind, opt, _ in rec["steps"] if kind == "RL"}
    il = {id(opt): opt for kind, opt, _ in rec["steps"] if kind == "IL"}
    assert len(rl) == len(il) == 1 and rl.keys() != il.keys()
    assert [o.defaults["lr"] for o in rl.values()] == [3e-4] and [o.defaults["lr"] for o in il.values()] == [1e-4]
    changed = {kind: {tuple(c) for k, _, c in rec["steps"] if k == kind} for kind in ("RL", "IL")}
    if mod is R:
        assert changed == {"RL": {("Residual",)}, "IL": {("BasePolicy",)}}
    else:
        assert changed == {"RL": {("Policy",)}, "IL": {("Policy",)}}


def test_main_rho_bar_is_the_ema_of_rho_and_sets_m(tiny_run):
    """charts/rho_bar after each update is the EMA (0.9, 0.1) of every rho measured so far; charts/m is dynamic_m of it."""
    mod, rec, rows = tiny_run
    logged_bar = [float(r["value"]) for r in rows if r["key"] == "charts/rho_bar"]
    logged_m = [float(r["value"]) for r in rows if r["key"] == "charts/m"][1:]  # after the value-only rollout: m
    rho_bar, bars = 0.0, []
    for rho in rec["rho"]:
        rho_bar = 0.9 * rho_bar + 0.1 * rho
        bars.append(rho_bar)
    # |rho_bar| <= 1 - 0.9^4 < 0.37 here, so m(t) stays 2: two IL steps (two rhos) in each of the two updates
    assert len(rec["rho"]) == 4 and logged_bar == pytest.approx([bars[1], bars[3]], rel=1e-6)
    assert logged_m == [mod.dynamic_m(2, b, 2, 30) for b in (bars[1], bars[3])]


@pytest.mark.parametrize("tiny_run", [R], ids=["residual"], indirect=True)
def test_main_residual_executes_base_plus_scaled_u(tiny_run):
    """The action each env executes is a_base + scale * u, u sampled from the residual (scale 0.1)."""
    _, rec, _ = tiny_run
    assert len(rec["sampled"]) == len(rec["executed"]) == 96
    for (a_base, u), executed in zip(rec["sampled"], rec["executed"]):
        assert np.allclose(executed, (a_base + 0.1 * u)[0].numpy(), atol=1e-6)

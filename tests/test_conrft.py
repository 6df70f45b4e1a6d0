"""ConRFT: Karras schedule, identity at sigma_min, Cal-QL calibration, loss shapes, short offline convergence, and
the official choices (LayerNorm policy, stage weights, plain TD online, the task reward on demos)."""
import argparse
import csv
import glob
import inspect
import os
import subprocess
import sys

import numpy as np
import torch

import conrft as C
from conftest import ROOT


def args(**kw):
    base = dict(num_sample_steps=1, gamma=0.95, cql_n_actions=4, cql_alpha=0.1, sigma_data=0.5, success_reward=10.0,
                step_penalty=0.05)
    return argparse.Namespace(**(base | kw))


def test_policy_trunk_is_dense_layernorm_tanh_as_official():
    pol, actor = C.ConsistencyPolicy(5, 2, 32, 0.002, 80.0, 0.5), C.GaussianActor(5, 2, 32)
    for net in (pol.net, actor.net):
        kinds = [type(m).__name__ for m in net.modules() if not isinstance(m, torch.nn.Sequential)]
        assert kinds[:6] == ["Linear", "LayerNorm", "Tanh", "Linear", "LayerNorm", "Tanh"], kinds
    # the time input: sinusoidal features of 1000 * 0.25 * log(k) (official timeMLP), not a learned linear map of k
    half = 8
    assert torch.allclose(pol.t_net.freqs, torch.exp(-np.log(1e4) / (half - 1) * torch.arange(half).float()))
    assert pol.t_net.net[0].in_features == 16


def test_official_defaults():
    a = C.Args()
    assert (a.eta_offline, a.beta_offline, a.eta, a.beta) == (0.0, 1.0, 1.0, 0.1)  # pretrain / online scripts
    assert not a.beta_fade and not a.online_cql and a.cta_ratio == 2 and a.eval_noise
    assert (a.success_reward, a.step_penalty, a.gamma) == (10.0, 0.05, 0.98)


def test_demo_rewards_and_mc_returns_carry_the_step_penalty():
    T = 4
    demos = {"observations": np.zeros((T, 3), np.float32), "next_observations": np.zeros((T, 3), np.float32),
             "actions": np.full((T, 2), 1.0, np.float32), "rewards": np.zeros(T, np.float32),
             "terminations": np.array([0, 0, 0, 1], np.float32), "truncations": np.zeros(T, np.float32)}
    rows = C.demo_rows(demos, True, args(gamma=0.5))
    assert np.allclose(rows["rewards"], [-0.05, -0.05, -0.05, 10.0])  # the same task reward as online steps
    assert np.allclose(rows["mc_returns"], C.mc_returns(rows["rewards"], demos["terminations"], 0.5))
    assert np.allclose(rows["mc_returns"][-2], -0.05 + 0.5 * 10.0) and np.allclose(rows["masks"], [1, 1, 1, 0])
    assert rows["actions"].max() < 1.0
    # the online reward goes through the same function; a dense env keeps its own reward
    assert np.isclose(C.task_reward(0.0, 3.0, True, 10.0, 0.05), -0.05)
    assert C.task_reward(1.0, 3.0, True, 10.0, 0.05) == 10
    assert C.task_reward(0.0, 3.0, False, 10.0, 0.05) == 3.0


def test_policy_loss_is_the_consistency_form_only_and_the_sac_baseline_has_its_own():
    assert "Gaussian" not in inspect.getsource(C.policy_loss)
    torch.manual_seed(0)
    actor, critic = C.GaussianActor(5, 2, 32), C.CriticEnsemble(5, 2, 2, 32)
    obs, act = torch.randn(8, 5), torch.rand(8, 2) * 2 - 1
    loss, l_bc, q = C.gaussian_policy_loss(actor, critic, obs, act, 1.0, 0.0)
    assert torch.allclose(loss, ((torch.tanh(actor.dist(obs).mean) - act) ** 2).mean()) and q.item() == 0
    loss, _, q = C.gaussian_policy_loss(actor, critic, obs, act, 0.1, 1.0)
    assert q.item() != 0 and torch.isfinite(loss)


def test_evaluation_noise_is_drawn_by_default():
    torch.manual_seed(0)
    pol, sig = C.ConsistencyPolicy(5, 2, 32, 0.002, 80.0, 0.5), C.karras_sigmas(10, 0.002, 80.0, 7.0)
    obs = torch.randn(1, 5)
    assert not torch.equal(pol.sample(obs, sig, noise=True), pol.sample(obs, sig, noise=True))
    assert torch.equal(pol.sample(obs, sig, noise=False), pol.sample(obs, sig, noise=False))


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
    pol = C.ConsistencyPolicy(5, 2, 32, 0.002, 80.0, 0.5)
    critic, target = C.CriticEnsemble(5, 2, 2, 32), C.CriticEnsemble(5, 2, 2, 32)
    b = {"observations": torch.randn(8, 5), "actions": torch.rand(8, 2) * 2 - 1, "rewards": torch.zeros(8),
         "next_observations": torch.randn(8, 5), "masks": torch.ones(8), "mc_returns": torch.zeros(8)}
    assert critic(b["observations"], b["actions"]).shape == (2, 8, 1)
    assert critic(b["observations"], torch.rand(8, 3, 2)).shape == (2, 8, 3)
    loss, td, cql = C.calql_loss(critic, target, pol, b, sig, args())
    assert loss.shape == td.shape == cql.shape == ()
    torch.manual_seed(1)
    td_only = C.td_loss(critic, target, pol, b, 0.95, sig)
    torch.manual_seed(1)
    assert torch.allclose(C.calql_loss(critic, target, pol, b, sig, args())[1], td_only)  # Cal-QL = TD + alpha reg
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
    for _ in range(400):
        idx = torch.randint(len(obs), (128,))
        loss = C.consistency_loss(pol, obs[idx], act[idx], sig, 0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
    loss1, err1 = stats()
    assert loss1 < 0.5 * loss0 and err1 < 0.6 * err0, (loss0, loss1, err0, err1)


def test_cli_offline_online_bc_only_and_sac(in_tmp):
    base = [sys.executable, os.path.join(ROOT, "conrft.py"), "--env-id", "metaworld/reach-v3", "--offline-steps", "40",
            "--online-steps", "60", "--eval-every", "60", "--eval-episodes", "1", "--cql-n-actions", "2",
            "--hidden", "64", "--batch-size", "32"]
    # the scripted expert takes over at every chance, so reach episodes end early in success and Stage II updates run
    online = ["--intervene-prob", "1.0", "--online-steps", "200", "--eval-every", "200"]
    for extra in (online, ["--algo", "bc-only"], ["--algo", "sac"] + online):
        out = subprocess.run(base + extra, capture_output=True, text=True, timeout=240)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "after Stage I" in out.stdout
    saved = torch.load(glob.glob("runs/*__sac__*/model.pt")[0], weights_only=False)
    assert abs(float(saved["log_alpha"]) - np.log(0.01)) > 1e-6  # SAC's Stage II updates ran (the temperature moved)
    with open(glob.glob("runs/*__conrft__conrft__*/metrics.csv")[0]) as f:
        keys = {(r["key"], float(r["value"])) for r in csv.DictReader(f)}
    names = {k for k, _ in keys}
    # Stage I trains the critic with Cal-QL; Stage II with the plain TD loss (no Cal-QL term) and a constant beta 0.1
    assert "offline/cql_diff" in names and "losses/td" in names and "losses/cql_diff" not in names
    assert {v for k, v in keys if k == "charts/beta"} == {0.1}
    # the options that are not official: Cal-QL kept online, beta fading from beta_offline
    out = subprocess.run(base + online + ["--online-cql", "--beta-fade", "--exp-name", "options"], capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    with open(glob.glob("runs/*__options__conrft__*/metrics.csv")[0]) as f:
        rows = list(csv.DictReader(f))
    betas = [float(r["value"]) for r in rows if r["key"] == "charts/beta"]
    assert any(r["key"] == "losses/cql_diff" for r in rows) and betas and 0.99 < max(betas) < 1.0


def test_takeover_after_corrects_every_long_episode_to_success(in_tmp):
    """--takeover-after N (no random interventions): the scripted expert takes over at step N of any episode and acts
    to its end, so every online reach episode succeeds, none before the policy acted its N steps (the untrained
    policy does not reach on its own)."""
    cmd = [sys.executable, os.path.join(ROOT, "conrft.py"), "--env-id", "metaworld/reach-v3", "--offline-steps", "20",
           "--online-steps", "300", "--eval-every", "1000", "--eval-episodes", "1", "--cql-n-actions", "2", "--hidden",
           "32", "--batch-size", "16", "--takeover-after", "60"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    with open(glob.glob("runs/*__conrft__conrft__*/metrics.csv")[0]) as f:
        ends = [(int(r["step"]), float(r["value"])) for r in csv.DictReader(f) if r["key"] == "charts/success"]
    assert len(ends) >= 2 and all(v == 1.0 for _, v in ends), ends
    assert np.diff([-1] + [s for s, _ in ends]).min() > 60, ends  # the expert alone reaches in about 30-50 steps


def test_stage_two_starts_with_fresh_optimizers(in_tmp, monkeypatch):
    """The official learner restores only Stage I's parameters: Stage II's Adam states start at step 0, so the policy's
    optimizer at the end counts the online actor updates alone, not the 300 offline ones before them."""
    made = []

    class Adam(torch.optim.Adam):
        def __init__(self, params, **kw):
            params = list(params)
            super().__init__(params, **kw)
            made.append((params, self))

    monkeypatch.setattr(C.torch.optim, "Adam", Adam)
    monkeypatch.setattr(sys, "argv", ["conrft.py", "--env-id", "metaworld/reach-v3", "--offline-steps", "300",
                                      "--online-steps", "100", "--eval-every", "1000", "--eval-episodes", "1",
                                      "--cql-n-actions", "2", "--hidden", "32", "--batch-size", "16",
                                      "--intervene-prob", "1.0"])
    threads = torch.get_num_threads()
    try:
        assert C.main() == 0
    finally:
        torch.set_num_threads(threads)
    saved = torch.load(glob.glob("runs/*/model.pt")[0], weights_only=False)
    policy_shapes = [v.shape for k, v in saved["policy"].items() if not k.endswith("freqs")]  # parameters, no buffer
    policy_opts = [opt for params, opt in made if [p.shape for p in params] == policy_shapes]
    assert len(policy_opts) == 2  # one per stage
    steps = int(policy_opts[-1].state[policy_opts[-1].param_groups[0]["params"][0]]["step"])
    assert 0 < steps < 100, steps  # online updates only (Stage I alone made 300)


def test_stage_two_from_a_stage_one_checkpoint(in_tmp):
    """--stage-one: Stage II starts from the saved Stage I (same evaluation as the run that made it, no offline
    step); a checkpoint of another --algo ends in one sentence."""
    base = [sys.executable, os.path.join(ROOT, "conrft.py"), "--env-id", "metaworld/reach-v3", "--offline-steps", "30",
            "--eval-every", "1000", "--eval-episodes", "1", "--cql-n-actions", "2", "--hidden", "32", "--batch-size",
            "16", "--no-eval-noise"]
    out = subprocess.run(base + ["--online-steps", "0", "--exp-name", "one"], capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    ckpt = glob.glob("runs/*__one__*/model.pt")[0]
    out = subprocess.run(base + ["--online-steps", "20", "--exp-name", "two", "--stage-one", ckpt],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    logs = {}
    for name in ("one", "two"):
        with open(glob.glob(f"runs/*__{name}__*/metrics.csv")[0]) as f:
            logs[name] = [(r["step"], r["key"], r["value"]) for r in csv.DictReader(f)]
    first_eval = {n: [v for s, k, v in rows if k == "eval/return" and s == "0"] for n, rows in logs.items()}
    assert first_eval["one"] == first_eval["two"] and len(first_eval["one"]) == 1
    assert not any(k.startswith("offline/") for _, k, _ in logs["two"])
    out = subprocess.run(base + ["--algo", "sac", "--online-steps", "20", "--stage-one", ckpt], capture_output=True,
                         text=True, timeout=240)
    assert out.returncode != 0 and "--stage-one" in out.stderr and "Traceback" not in out.stderr


def test_gaussian_actor_log_prob_and_sac_losses():
    torch.manual_seed(0)
    actor, critic, target = C.GaussianActor(5, 3, 32), C.CriticEnsemble(5, 3, 2, 32), C.CriticEnsemble(5, 3, 2, 32)
    obs = torch.randn(16, 5)
    a, logp = actor(obs)
    assert a.shape == (16, 3) and logp.shape == (16,) and a.abs().max() < 1
    # the log-probability of the sampled action, recomputed from the action alone, matches the sampler's
    assert torch.allclose(actor.log_prob(obs, a.detach()), logp.detach(), atol=1e-2)
    assert actor.sample(obs, noise=False).shape == (16, 3)
    b = {"observations": obs, "actions": torch.rand(16, 3) * 2 - 1, "rewards": torch.ones(16),
         "next_observations": torch.randn(16, 5), "masks": torch.ones(16)}
    log_alpha = torch.zeros((), requires_grad=True)
    c = C.td_loss(critic, target, actor, b, 0.95)  # SAC's critic loss (HIL-SERL: no entropy backup)
    act_l, t = C.sac_actor_losses(actor, critic, log_alpha, obs, -1.5)
    assert c.dim() == act_l.dim() == t.dim() == 0 and torch.isfinite(c + act_l + t)
    t.backward()
    assert log_alpha.grad is not None and critic.l1.weight.grad is None  # the temperature loss touches only alpha


def test_cli_runs_on_hopper_with_the_shipped_expert_intervening(in_tmp):
    cmd = [sys.executable, os.path.join(ROOT, "conrft.py"), "--env-id", "Hopper-v4", "--algo", "sac",
           "--offline-steps", "30", "--online-steps", "1000", "--eval-every", "1000", "--eval-episodes", "1",
           "--cql-n-actions", "2", "--hidden", "64", "--batch-size", "32", "--intervene-prob", "0.1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    metrics = open(glob.glob("runs/Hopper-v4__conrft__sac__*/metrics.csv")[0]).read()
    rates = [float(line.split(",")[2]) for line in metrics.splitlines() if ",charts/intervention_rate," in line]
    assert "eval/return" in metrics and len(rates) == 1 and 0 < rates[0] < 1  # the expert acted, but not always


def test_bad_cta_ratio_ends_in_one_sentence(in_tmp):
    cmd = [sys.executable, os.path.join(ROOT, "conrft.py"), "--cta-ratio", "0"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "--cta-ratio 0" in out.stderr and "Traceback" not in out.stderr


def test_compile_wraps_the_same_updates(in_tmp, monkeypatch):
    """--compile runs critic_update and actor_update through torch.compile (TorchDynamo traces them, both stages).
    Here Dynamo hands the captured graphs to the eager backend (inductor's code generation costs minutes on this CPU
    and is tested in rlpd and IN-RIL), so a compiled run must log what an eager run logs (to float rounding)."""
    import torch._dynamo

    compiled, real_compile = [], torch.compile

    def compile_eager(fn, **kw):
        compiled.append(fn.__name__)
        return real_compile(fn, backend="eager", **kw)

    base = ["conrft.py", "--env-id", "metaworld/reach-v3", "--offline-steps", "20", "--online-steps", "120",
            "--eval-every", "1000", "--eval-episodes", "1", "--cql-n-actions", "2", "--hidden", "32", "--batch-size",
            "16", "--intervene-prob", "1.0"]
    logs = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        torch._dynamo.reset()
        monkeypatch.setattr(C.torch, "compile", compile_eager)
        monkeypatch.setattr(sys, "argv", base + ["--exp-name", name] + extra)
        threads = torch.get_num_threads()
        try:
            assert C.main() == 0
        finally:
            torch.set_num_threads(threads)
        with open(glob.glob(f"runs/*__{name}__*/metrics.csv")[0]) as f:
            logs[name] = [(r["step"], r["key"], float(r["value"])) for r in csv.DictReader(f)
                          if r["key"].startswith(("losses/", "offline/"))]
    assert compiled == ["critic_update", "actor_update"]
    assert any(k == "losses/td" for _, k, _ in logs["eager"])  # Stage II updates ran
    assert [x[:2] for x in logs["compiled"]] == [x[:2] for x in logs["eager"]]
    assert np.allclose([x[2] for x in logs["compiled"]], [x[2] for x in logs["eager"]], rtol=1e-4, atol=1e-6)


def test_intervene_gap_gates_the_expert_on_the_action_gap(in_tmp):
    """--intervene-gap G: the expert steps in when the L1 gap between the policy's action and its own exceeds G. With
    a tiny G it acts at every step, so reach episodes succeed one after another (the untrained policy never reaches
    on its own); with a huge G it never acts, so no episode succeeds."""
    ends = {}
    for gap in ("1e-6", "1e3"):
        cmd = [sys.executable, os.path.join(ROOT, "conrft.py"), "--env-id", "metaworld/reach-v3", "--offline-steps",
               "20", "--online-steps", "200", "--eval-every", "1000", "--eval-episodes", "1", "--cql-n-actions", "2",
               "--hidden", "32", "--batch-size", "16", "--intervene-gap", gap, "--exp-name", f"gap{gap}"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
        assert out.returncode == 0, out.stderr[-2000:]
        with open(glob.glob(f"runs/*__gap{gap}__conrft__*/metrics.csv")[0]) as f:
            ends[gap] = [float(r["value"]) for r in csv.DictReader(f) if r["key"] == "charts/success"]
    assert len(ends["1e-6"]) >= 3 and all(v == 1.0 for v in ends["1e-6"]), ends
    assert 1.0 not in ends["1e3"], ends


# ---- the docstring's equations -> code map ----
def test_docstring_map_names_what_the_file_defines():
    """Every `-> name()` of the equations -> code map names a function or class of conrft.py."""
    doc_map = C.__doc__.split("Equations -> code")[1]
    names = [n.strip().removesuffix("()") for line in doc_map.splitlines() if "->" in line
             for n in line.split("->")[1].split(",")]
    assert len(names) >= 12
    assert [n for n in names if not callable(getattr(C, n, None))] == []


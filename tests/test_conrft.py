"""ConRFT: Karras schedule, identity at sigma_min, Cal-QL calibration, loss shapes, short offline convergence, the
official choices (LayerNorm policy, stage weights, plain TD online, the task reward on demos), each equation of the
docstring's map against its formula, and what main() runs on a tiny stand-in task (tools/mutants.py names the test
that catches each broken fidelity row)."""
import argparse
import csv
import glob
import inspect
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import conrft as C
from conftest import ROOT


def args(**kw):
    base = dict(num_sample_steps=1, gamma=0.95, cql_n_actions=4, cql_alpha=0.1, sigma_data=0.5, success_reward=10.0,
                step_penalty=0.05, episode_steps=0)
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
    assert torch.allclose(l_bc, ((torch.tanh(actor.dist(obs).mean) - act) ** 2).mean()) and q.item() == 0
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
    assert torch.allclose(actor.tanh_log_prob(actor.dist(obs), torch.atanh(a.detach())), logp.detach(), atol=1e-2)
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


# ---- what main() runs, on a tiny stand-in for a MetaWorld task (each check names the fidelity row it guards) ----
class ToyReach(gym.Env):
    """A MetaWorld stand-in that runs in milliseconds: x moves by a[0] / 4 per step from 0; success (a termination,
    info["success"] = 1) once x >= 0.9, so the expert a = (1, 0) succeeds at its 4th step; truncated after 6 steps."""
    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = 0.0, 0
        return self.obs(), {}

    def obs(self):
        return np.array([self.x, self.t / 6, 1.0], np.float32)

    def step(self, action):
        self.x, self.t = self.x + float(action[0]) / 4, self.t + 1
        success = self.x >= 0.9
        return self.obs(), self.x, success, self.t >= 6 and not success, {"success": float(success)}


TOY_EXPERT = lambda obs: np.array([1.0, 0.0], np.float32)  # noqa: E731


def toy_demos(path, episodes=5):
    env, rows = ToyReach(), {k: [] for k in ("observations", "actions", "rewards", "next_observations",
                                             "terminations", "truncations")}
    for _ in range(episodes):
        obs, _ = env.reset()
        done = False
        while not done:
            next_obs, r, term, trunc, _ = env.step(TOY_EXPERT(obs))
            for k, v in zip(rows, (obs, TOY_EXPERT(obs), r, next_obs, term, trunc)):
                rows[k].append(v)
            obs, done = next_obs, term or trunc
    np.savez(path, **{k: np.array(v, np.float32) for k, v in rows.items()})
    return str(path)


TAKEOVER_AFTER = 3  # the expert corrects every online episode from its 4th step to its end


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """One in-process main() on ToyReach (4 offline steps, 40 online steps, --takeover-after 3), recording through
    the module's own functions what it did: the loss calls in order ("cql", "td", "pi", "eval"), the (beta, eta) of
    each policy loss, each optimizer step (and whether that optimizer had no state yet), every stored episode."""
    tmp = tmp_path_factory.mktemp("toy")
    rec = {"events": [], "weights": [], "opt_steps": [], "episodes": []}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.setattr(C, "make_env", lambda env_id, seed, max_episode_steps=None:
                   lambda: gym.wrappers.RecordEpisodeStatistics(ToyReach()))
        mp.setattr(C, "make_expert", lambda env_id, data_dir: TOY_EXPERT)

        def spy(name, record=None):
            real = getattr(C, name)

            def wrapped(*a, **kw):
                if record:
                    record(*a)
                return real(*a, **kw)

            mp.setattr(C, name, wrapped)

        spy("calql_loss", lambda *a: rec["events"].append("cql"))
        spy("td_loss", lambda *a: rec["events"].append("td"))
        spy("policy_loss", lambda *a: (rec["events"].append("pi"), rec["weights"].append(a[6:8])))
        spy("evaluate", lambda *a: rec["events"].append("eval"))
        spy("gradient_step", lambda opt, loss: rec["opt_steps"].append((opt, len(opt.state) == 0)))
        spy("store_episode", lambda ep, *a: rec["episodes"].append(list(ep)))
        mp.setattr(sys, "argv", ["conrft.py", "--env-id", "metaworld/toy-v3", "--demo-path", toy_demos(tmp / "d.npz"),
                                 "--offline-steps", "4", "--online-steps", "40", "--eval-every", "1000",
                                 "--eval-episodes", "1", "--cql-n-actions", "2", "--hidden", "8", "--batch-size", "8",
                                 "--takeover-after", str(TAKEOVER_AFTER)])
        threads = torch.get_num_threads()
        try:
            assert C.main() == 0
        finally:
            torch.set_num_threads(threads)
    with open(glob.glob(str(tmp / "runs/*/metrics.csv"))[0]) as f:
        rec["metrics"] = [(int(r["step"]), r["key"], float(r["value"])) for r in csv.DictReader(f)]
    last_eval = len(rec["events"]) - rec["events"][::-1].index("eval")  # Stage I ends with its evaluations
    rec["stage_one"], rec["stage_two"] = rec["events"][:last_eval], rec["events"][last_eval:]
    return rec


def test_learner_step_stage_one_cal_ql_then_stage_two_plain_td(toy_run):
    """Per learner step, cta_ratio (2) critic updates then one actor update, as official; Stage I's critic is Cal-QL
    (its TD part inside), Stage II's the plain TD loss, and nothing else runs."""
    stage_one = [e for e in toy_run["stage_one"] if e != "eval"]
    assert stage_one == ["cql", "td", "cql", "td", "pi"] * 4
    n = toy_run["stage_two"].count("pi")
    assert n > 10 and toy_run["stage_two"] == ["td", "td", "pi"] * n
    keys = {k for _, k, _ in toy_run["metrics"]}
    assert "offline/cql_diff" in keys and "losses/td" in keys and "losses/cql_diff" not in keys


def test_stage_weights_eta_beta(toy_run):
    """Stage I: eta 0, beta 1 (official pre-training script); Stage II: eta 1, beta 0.1, constant."""
    weights = toy_run["weights"]
    assert weights[:4] == [(1.0, 0.0)] * 4 and set(weights[4:]) == {(0.1, 1.0)}


def test_stage_two_optimizers_are_fresh(toy_run):
    """Stage II steps new Adam optimizers that start without state (the official learner restores parameters only);
    Stage I's two optimizers are never stepped again."""
    steps = toy_run["opt_steps"]
    stage_one, stage_two = steps[:4 * 3], steps[4 * 3:]
    first = {id(o) for o, _ in stage_one}
    assert len(first) == 2 and not {id(o) for o, _ in stage_two} & first
    fresh = {}
    for o, empty in stage_two:
        fresh.setdefault(id(o), empty)
    assert len(fresh) == 2 and all(fresh.values())


def test_episode_ends_masks_and_takeover_reset(toy_run):
    """Each stored episode: mask 0 only at a termination (success), 1 at a truncation (it bootstraps); the expert's
    correction from step --takeover-after ends with its episode (the next one starts with the policy acting)."""
    episodes = toy_run["episodes"]
    ends = set()
    for ep in episodes:
        success = ep[-1][2] == 10.0  # the task reward: +10 at the success step
        ends.add(success)
        assert [e[4] for e in ep] == [1.0] * (len(ep) - 1) + [0.0 if success else 1.0]
        assert [bool(e[5]) for e in ep] == [t >= TAKEOVER_AFTER for t in range(len(ep))]
    assert len(episodes) >= 5 and ends == {True, False}  # both kinds of end occurred


# ---- the equations of the docstring's map, each checked against the paper's formula ----
def test_docstring_map_names_what_the_file_defines():
    """Every `-> name()` of the equations -> code map names a function or class of conrft.py."""
    doc_map = C.__doc__.split("Equations -> code")[1]
    names = [n.strip().removesuffix("()") for line in doc_map.splitlines() if "->" in line
             for n in line.split("->")[1].split(",")]
    assert len(names) >= 12
    assert [n for n in names if not callable(getattr(C, n, None))] == []


def test_karras_levels_follow_the_formula():
    """k_m = (k_max^{1/rho} + (m-1)/(M-1) (k_min^{1/rho} - k_max^{1/rho}))^rho at every m, not only the ends."""
    M, lo, hi, rho = 7, 0.002, 80.0, 7.0
    m = np.arange(1, M + 1)
    want = (hi ** (1 / rho) + (m - 1) / (M - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    assert np.allclose(C.karras_sigmas(M, lo, hi, rho).numpy(), want, rtol=1e-5)


def test_network_inputs_are_c_in_scaled_action_and_250_log_k():
    """F_psi sees c_in(k) x = x / sqrt(k^2 + sd^2) and the time MLP sees 1000 * 0.25 * log(k) (official timeMLP)."""
    torch.manual_seed(0)
    pol = C.ConsistencyPolicy(5, 2, 32, 0.002, 80.0, 0.5)
    seen = {}
    pol.t_net.register_forward_pre_hook(lambda m, inp: seen.__setitem__("t", inp[0]))
    pol.net.register_forward_pre_hook(lambda m, inp: seen.__setitem__("h", inp[0]))
    obs, x, k = torch.randn(4, 5), torch.randn(4, 2), torch.tensor([[0.1], [1.0], [5.0], [80.0]])
    pol(obs, x, k)
    assert torch.allclose(seen["t"], 250 * torch.log(k))
    assert torch.allclose(seen["h"][:, :5], obs) and torch.allclose(seen["h"][:, 5:7], x / (k**2 + 0.25).sqrt())


def test_consistency_loss_levels_and_karras_weight():
    """L_c draws each row's level from the first M - 1 levels (k_min, where f is the identity, never), all of them
    over many rows, and weights the squared error by w(k) = 1/k^2 + 1/sd^2: with a reconstruction error of 1 in every
    action dimension the loss is the mean of w over the drawn levels."""
    sig, drawn = C.karras_sigmas(5, 0.002, 80.0, 7.0), []
    act = torch.rand(4000, 2) * 2 - 1

    def policy(obs, x, k):  # a stand-in f that records its level and misses every action dimension by 1
        drawn.append(k)
        return act + 1.0

    loss = C.consistency_loss(policy, torch.zeros(4000, 3), act, sig, 0.5)
    k = drawn[0].squeeze(-1)
    assert set(k.tolist()) == set(sig[:-1].tolist())
    assert torch.allclose(loss, (1 / k**2 + 1 / 0.5**2).mean())


def critic_batch(seed=0, B=16):
    torch.manual_seed(seed)
    sig = C.karras_sigmas(10, 0.002, 80.0, 7.0)
    pol = C.ConsistencyPolicy(5, 2, 32, 0.002, 80.0, 0.5)
    critic, target = C.CriticEnsemble(5, 2, 2, 32), C.CriticEnsemble(5, 2, 2, 32)
    b = {"observations": torch.randn(B, 5), "actions": torch.rand(B, 2) * 2 - 1, "rewards": torch.randn(B),
         "next_observations": torch.randn(B, 5), "masks": (torch.rand(B) > 0.3).float(), "mc_returns": torch.zeros(B)}
    return sig, pol, critic, target, b


def test_td_loss_is_the_official_target():
    """y = r + gamma mask min_i Qbar_i(s', a'), a' one noisy sample of the policy, no entropy term; the loss is the
    mean over members and rows of (Q_i(s, a) - y)^2 (no 1/2)."""
    sig, pol, critic, target, b = critic_batch()
    torch.manual_seed(5)
    loss = C.td_loss(critic, target, pol, b, 0.9, sig)
    torch.manual_seed(5)
    with torch.no_grad():
        next_a = pol.sample(b["next_observations"], sig, noise=True)
        assert not torch.allclose(next_a, pol.sample(b["next_observations"], sig, noise=False))
        q_next = target(b["next_observations"], next_a).squeeze(-1)  # (2, B), two different target critics
        assert (q_next[0] != q_next[1]).all()
        y = b["rewards"] + 0.9 * b["masks"] * q_next.min(0).values
        want = ((critic(b["observations"], b["actions"]).squeeze(-1) - y) ** 2).mean()
    assert torch.allclose(loss, want)


def test_cal_ql_regulariser_floors_every_sampled_q_at_the_mc_return():
    """Each Q of a sampled action (random, current, next) is max(Q, V^mu): with V^mu = 50 far above every Q the
    regulariser is logsumexp over 3n values of 50 and Q(s, a_data), minus log(3n + 1), minus Q(s, a_data)."""
    sig, pol, critic, target, b = critic_batch()
    n = 3
    b["mc_returns"] = torch.full((16,), 50.0)
    _, _, reg = C.calql_loss(critic, target, pol, b, sig, args(cql_n_actions=n))
    with torch.no_grad():
        q = critic(b["observations"], b["actions"])  # (2, B, 1)
        cat = torch.cat([torch.full((2, 16, 3 * n), 50.0), q], -1)
        want = (torch.logsumexp(cat, -1) - np.log(3 * n + 1) - q.squeeze(-1)).mean()
    assert torch.allclose(reg, want, rtol=1e-5)


def test_policy_loss_weights_eta_and_beta():
    """L_pi = -eta mean_i Q_i(s, a~pi) + beta L_c (Eq. 4) at eta 0.5, beta 0.1, drawn as the function draws them."""
    sig, pol, critic, _, b = critic_batch()
    obs, act = b["observations"], b["actions"]
    torch.manual_seed(3)
    loss, l_c, q = C.policy_loss(pol, critic, obs, act, sig, args(), 0.1, 0.5)
    torch.manual_seed(3)
    want_l_c = C.consistency_loss(pol, obs, act, sig, 0.5)
    want_q = critic(obs, pol.sample(obs, sig)).mean()
    assert torch.allclose(l_c, want_l_c) and torch.allclose(q, want_q)
    assert torch.allclose(loss, -0.5 * want_q + 0.1 * want_l_c)


# ---- Stage II's data: the 50/50 batch and the routing of interventions ----
def test_mixed_batch_is_half_demo_half_online():
    demo_buf, online_buf = C.Buffer(3, 2, 20), C.Buffer(3, 2, 20)
    for buf, r in ((demo_buf, 1.0), (online_buf, 2.0)):
        buf.add_many({"observations": np.zeros((20, 3)), "actions": np.zeros((20, 2)), "rewards": np.full(20, r),
                      "next_observations": np.zeros((20, 3)), "masks": np.ones(20), "mc_returns": np.zeros(20)})
    rng = np.random.default_rng(0)
    assert C.mixed_batch(demo_buf, online_buf, 10, rng)["rewards"].tolist() == [1.0] * 5 + [2.0] * 5
    assert C.mixed_batch(demo_buf, online_buf, 9, rng)["rewards"].tolist() == [1.0] * 4 + [2.0] * 5


def test_store_episode_sends_interventions_to_both_buffers():
    """The whole episode goes to the online buffer with its Monte-Carlo returns; its expert steps also go to the
    demo buffer, with the returns of the whole episode (HIL-SERL)."""
    by_expert = [False, True, True, False]
    episode = [(np.full(3, t, np.float32), np.full(2, 0.1 * t, np.float32), -0.05 if t < 3 else 10.0,
                np.full(3, t + 1, np.float32), 1.0 if t < 3 else 0.0, e) for t, e in enumerate(by_expert)]
    online_buf, demo_buf = C.Buffer(3, 2, 10), C.Buffer(3, 2, 10)
    C.store_episode(episode, online_buf, demo_buf, 0.5)
    mc = C.mc_returns(np.array([-0.05, -0.05, -0.05, 10.0], np.float32), np.array([0, 0, 0, 1.0]), 0.5)
    assert online_buf.size == 4 and np.allclose(online_buf.d["mc_returns"][:4], mc)
    assert np.allclose(online_buf.d["masks"][:4], [1, 1, 1, 0])
    assert demo_buf.size == 2 and np.allclose(demo_buf.d["observations"][:2, 0], [1, 2])
    assert np.allclose(demo_buf.d["mc_returns"][:2], mc[1:3]) and np.allclose(demo_buf.d["actions"][:2, 0], [0.1, 0.2])


# ---- the official episode end and critic, behind flags (--episode-steps, --state-embed) ----
def test_demo_masks_count_every_episode_end_as_done_with_episode_steps():
    """Default: a demo episode that ends by truncation bootstraps (mask 1); with --episode-steps every episode end
    is done (mask 0), as the official time limit; a termination is mask 0 either way."""
    demos = {"observations": np.zeros((5, 3), np.float32), "next_observations": np.zeros((5, 3), np.float32),
             "actions": np.zeros((5, 2), np.float32), "rewards": np.zeros(5, np.float32),
             "terminations": np.float32([0, 1, 0, 0, 0]), "truncations": np.float32([0, 0, 0, 0, 1])}
    assert C.demo_rows(demos, True, args())["masks"].tolist() == [1, 0, 1, 1, 1]
    assert C.demo_rows(demos, True, args(episode_steps=3))["masks"].tolist() == [1, 0, 1, 1, 0]


def test_critic_state_embedding_is_the_official_dense_layernorm_tanh():
    """embed > 0: the state goes through one Dense(embed) -> LayerNorm -> tanh shared by the E critics (the official
    EncodingWrapper's proprio branch), and the Q MLP sees [embedding, action]; embed 0: the raw state, no parameters."""
    torch.manual_seed(0)
    plain, critic = C.CriticEnsemble(5, 2, 2, 32), C.CriticEnsemble(5, 2, 2, 32, embed=64)
    assert not list(plain.embed.parameters()) and plain.l1.weight.shape == (2, 7, 32)
    assert [type(m).__name__ for m in critic.embed] == ["Linear", "LayerNorm", "Tanh"]
    assert critic.embed[0].in_features == 5 and critic.embed[0].out_features == 64
    assert critic.l1.weight.shape == (2, 66, 32)
    seen = {}
    critic.l1.register_forward_pre_hook(lambda m, inp: seen.__setitem__("x", inp[0]))
    obs, act = torch.randn(4, 5), torch.rand(4, 2)
    assert critic(obs, act).shape == (2, 4, 1) and critic(obs, torch.rand(4, 3, 2)).shape == (2, 4, 3)
    critic(obs, act)
    emb = torch.tanh(torch.nn.functional.layer_norm(critic.embed[0](obs), (64,), critic.embed[1].weight,
                                                    critic.embed[1].bias))
    assert torch.allclose(seen["x"][0], torch.cat([emb, act], -1)) and torch.equal(seen["x"][0], seen["x"][1])
    pol = C.ConsistencyPolicy(5, 2, 32, 0.002, 80.0, 0.5, embed=64)  # the policy's own embedding (the official actor)
    assert [type(m).__name__ for m in pol.embed] == ["Linear", "LayerNorm", "Tanh"] and pol.net[0][0].in_features == 82
    pol.net.register_forward_pre_hook(lambda m, inp: seen.__setitem__("p", inp[0]))
    pol(obs, act, torch.full((4, 1), 1.0))
    emb = torch.tanh(torch.nn.functional.layer_norm(pol.embed[0](obs), (64,), pol.embed[1].weight, pol.embed[1].bias))
    assert torch.allclose(seen["p"][:, :64], emb) and not list(C.ConsistencyPolicy(5, 2, 32, 0.002, 80.0, 0.5).embed)


def test_main_with_episode_steps_and_state_embed(tmp_path, monkeypatch):
    """--episode-steps 3: training episodes (ToyReach, success needs 4 expert steps) end at step 3 with mask 0, the
    time limit counted as done, and evaluation episodes end at step 3 too (official: one env). --state-embed 16: the
    critic and its target carry the embedding, the policy its own. Both are off by default
    (test_episode_ends_masks_and_takeover_reset: truncations mask 1)."""
    limits, episodes = [], []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(C, "make_env", lambda env_id, seed, max_episode_steps=None: (
        limits.append(max_episode_steps), lambda: gym.wrappers.RecordEpisodeStatistics(
            gym.wrappers.TimeLimit(ToyReach(), max_episode_steps or 6)))[1])
    monkeypatch.setattr(C, "make_expert", lambda env_id, data_dir: TOY_EXPERT)
    real_store = C.store_episode
    monkeypatch.setattr(C, "store_episode", lambda ep, *a: (episodes.append(list(ep)), real_store(ep, *a)))
    monkeypatch.setattr(sys, "argv", ["conrft.py", "--env-id", "metaworld/toy-v3", "--demo-path",
                                      toy_demos(tmp_path / "d.npz"), "--offline-steps", "2", "--online-steps", "12",
                                      "--eval-every", "1000", "--eval-episodes", "1", "--cql-n-actions", "2",
                                      "--hidden", "8", "--batch-size", "8", "--intervene-prob", "1.0",
                                      "--episode-steps", "3", "--state-embed", "16"])
    threads = torch.get_num_threads()
    try:
        assert C.main() == 0
    finally:
        torch.set_num_threads(threads)
    assert len(limits) > 1 and set(limits) == {3}  # the training env, then evaluate()'s
    assert len(episodes) == 4 and all([e[4] for e in ep] == [1.0, 1.0, 0.0] for ep in episodes)
    saved = torch.load(glob.glob("runs/*/model.pt")[0], weights_only=False)
    for key in ("critic", "target_critic"):
        assert saved[key]["embed.0.weight"].shape == (16, 3) and saved[key]["l1.weight"].shape[1] == 16 + 2
    assert saved["policy"]["embed.0.weight"].shape == (16, 3) and saved["policy"]["net.0.0.weight"].shape[1] == 34
    assert not torch.equal(saved["policy"]["embed.0.weight"], saved["critic"]["embed.0.weight"])  # its own


def test_resume_goes_on_with_a_stage_one_stopped_by_a_signal_exactly(tmp_path, monkeypatch):
    """--resume: a Stage I stopped by SIGTERM after 3 of 6 steps, resumed, ends with the very parameters of the run
    that was never stopped (its Adam states, both RNGs and its step count come back; a finished Stage I saves only
    its step count); a checkpoint that did not stop in Stage I ends in one sentence."""
    import signal

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(C, "make_env", lambda env_id, seed, max_episode_steps=None:
                        lambda: gym.wrappers.RecordEpisodeStatistics(ToyReach()))
    demos = toy_demos(tmp_path / "d.npz")

    def stopping_tqdm(iterable, *a, **kw):  # SIGTERM before the 4th step, as `kill` would
        for i, x in enumerate(iterable):
            if i == 3:
                signal.raise_signal(signal.SIGTERM)
            yield x

    def run(name, *extra):
        monkeypatch.setattr(sys, "argv", ["conrft.py", "--env-id", "metaworld/toy-v3", "--demo-path", demos,
                                          "--offline-steps", "6", "--online-steps", "0", "--eval-every", "1000",
                                          "--eval-episodes", "1", "--cql-n-actions", "2", "--hidden", "8",
                                          "--batch-size", "8", "--exp-name", name, *extra])
        threads = torch.get_num_threads()
        try:
            code = C.main()
        finally:
            torch.set_num_threads(threads)
        return code, torch.load(glob.glob(f"runs/*__{name}__*/model.pt")[0], weights_only=False)

    _, straight = run("straight")
    with monkeypatch.context() as mp:
        mp.setattr(C, "tqdm", stopping_tqdm)
        code, stopped = run("stopped")
    assert code == 128 + signal.SIGTERM and stopped["stage_one"]["done"] == 3
    _, resumed = run("resumed", "--resume", glob.glob("runs/*__stopped__*/model.pt")[0])
    assert straight["stage_one"] == {"done": 6} and resumed["stage_one"] == {"done": 6}
    for key in ("policy", "critic", "target_critic"):
        assert not all(torch.equal(v, stopped[key][n]) for n, v in straight[key].items())  # 3 steps short
        assert all(torch.equal(v, resumed[key][n]) for n, v in straight[key].items()), key
    with pytest.raises(SystemExit, match="stopped in Stage I"):
        run("again", "--resume", glob.glob("runs/*__straight__*/model.pt")[0])


def test_negative_episode_steps_or_state_embed_end_in_one_sentence():
    for field in ("episode_steps", "state_embed"):
        with pytest.raises(SystemExit, match="neither may be negative"):
            C.Args(**{field: -1})


def test_sac_stage_one_trains_the_std_by_the_demos_likelihood_and_the_mean_by_mse():
    """Stage I of the SAC baseline (eta 0, as official): the log-std head gets a gradient (before: none, so its std
    stayed at its initial ~1), from -log N(a; m, ((1 - m^2) std)^2), m = tanh(mean) held fixed, the std head on
    fixed trunk features: mean head and trunk get exactly the MSE's gradient. Trained, the std fits the spread."""
    torch.manual_seed(0)
    actor, critic = C.GaussianActor(5, 2, 32), C.CriticEnsemble(5, 2, 2, 32)
    obs, act = torch.randn(64, 5), torch.rand(64, 2) * 1.6 - 0.8
    loss, l_bc, _ = C.gaussian_policy_loss(actor, critic, obs, act, 0.5, 0.0)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in actor.named_parameters()}
    assert grads["log_std.weight"].abs().sum() > 0
    m, s = torch.tanh(actor.dist(obs).mean), actor.dist(obs).stddev
    want = l_bc + (-torch.distributions.Normal(m, (1 - m**2) * s).log_prob(act)).sum(-1).mean()
    assert torch.allclose(loss, 0.5 * want)
    actor.zero_grad()
    (0.5 * ((torch.tanh(actor.dist(obs).mean) - act) ** 2).mean()).backward()
    assert all(torch.allclose(grads[n], p.grad) for n, p in actor.named_parameters() if not n.startswith("log_std"))
    # demos a = tanh(u) with u = 0.3 x_0 + 0.1 noise: the pre-tanh std the head learns comes near 0.1 (from ~1)
    obs = torch.randn(512, 5)
    act = torch.tanh(0.3 * obs[:, :2] + 0.1 * torch.randn(512, 2))
    opt = torch.optim.Adam(actor.parameters(), lr=1e-2)
    for _ in range(200):
        C.gradient_step(opt, C.gaussian_policy_loss(actor, critic, obs, act, 1.0, 0.0)[0])
    std = actor.dist(obs).stddev.median().item()
    assert 0.07 < std < 0.15, std

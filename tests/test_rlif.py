"""RLIF: main() itself on tiny budgets, with its env steps and replay buffers recorded (who acts, what is stored
with which label, episode ends, the reference action and critic, the baselines' labels, the demos' labels); the pure
functions (step_decision, the intervention rules, terminal labels, Q_ref's Monte-Carlo targets, the BC NLL, the SAC
critic step, the official defaults); CLI runs and bad input."""
import glob
import os
import re
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlif
from conftest import ROOT
from template import load_policy, make_env

DATA = os.path.join(ROOT, "data")
MEDIUM, REF = np.full(3, 0.3, np.float32), np.full(3, -0.2, np.float32)  # the fake medium and expert actions
TINY = ["--total-timesteps", "300", "--hidden", "32", "--num-qs", "2", "--batch-size", "8", "--eval-every", "10000",
        "--start-training", "10000", "--bc-every", "10000", "--bc-updates", "1"]  # no learning update: data only


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: two threads on two busy cores make the small fits here 10-20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class RecordingEnv(gym.Wrapper):
    """Appends every step to `log` as (obs, action, next_obs, terminated, truncated)."""

    def __init__(self, env, log):
        super().__init__(env)
        self.log, self.obs = log, None

    def reset(self, **kwargs):
        self.obs, info = self.env.reset(**kwargs)
        return self.obs, info

    def step(self, action):
        next_obs, r, term, trunc, info = self.env.step(action)
        self.log.append((self.obs.copy(), np.array(action, np.float32), next_obs.copy(), bool(term), bool(trunc)))
        self.obs = next_obs
        return next_obs, r, term, trunc, info


class Run:
    """What main() did: env `steps`, its ReplayBuffers in creation order with every row added to each (`added`),
    the reference critic's calls (step index, the two actions it scored) and the policy fit_qref() was given."""

    def __init__(self, mp, *flags):
        self.steps, self.buffers, self.qref_calls, self.qref_policy = [], [], [], None
        self.acting, self.bc_optimisers = [], []  # deterministic= of every one-state actor call; BC's optimisers
        real_make_env, run = rlif.make_env, self
        real_bc_phase = rlif.bc_phase

        class Actor(rlif.Actor):
            def forward(self, obs, deterministic=False):
                if obs.shape[0] == 1:
                    run.acting.append(deterministic)
                return super().forward(obs, deterministic)

        def bc_phase(actor, actor_opt, *rest):
            run.bc_optimisers.append(actor_opt)
            return real_bc_phase(actor, actor_opt, *rest)

        class Buffer(rlif.ReplayBuffer):
            def __init__(self, *a):
                super().__init__(*a)
                self.added = []
                run.buffers.append(self)

            def add(self, *row):
                self.added.append(tuple(np.array(x, np.float32) for x in row))
                super().add(*row)

        class QRef(torch.nn.Module):  # Q_ref(s, a) = -|a - REF|_1: the rule fires for every action but REF's
            def forward(self, obs, act):
                run.qref_calls.append((len(run.steps), act.numpy().copy()))
                return -(act - torch.as_tensor(REF)).abs().sum(-1)

        def fit_qref(policy, env, *rest):
            run.qref_policy = policy
            return QRef(), 1.0, 0

        mp.setattr(rlif, "make_env", lambda env_id, seed, *_: lambda: RecordingEnv(real_make_env(env_id, seed)(), run.steps))
        mp.setattr(rlif, "load_policy", lambda path: (lambda obs: MEDIUM.copy()) if "-medium-" in path else
                   (lambda obs: REF.copy()))
        mp.setattr(rlif, "fit_qref", fit_qref)
        mp.setattr(rlif, "ReplayBuffer", Buffer)
        mp.setattr(rlif, "Actor", Actor)
        mp.setattr(rlif, "bc_phase", bc_phase)
        mp.setattr(sys, "argv", ["rlif.py", *TINY, *flags])
        assert rlif.main() == 0
        self.expert = np.array([np.array_equal(s[1], MEDIUM) for s in self.steps])  # the expert acted each step
        ends = [t + 1 for t, s in enumerate(self.steps) if s[3] or s[4]]
        self.episodes = [list(range(a, b)) for a, b in zip([0] + ends, ends + [len(self.steps)]) if b > a]


def expected_rows(run, T=4, terminal="penalty", gamma=0.99):
    """The official labels from who acted: a step is stored when the next one is taken, with 0 if the learner acts
    then, -1 if the expert takes over after a learner step, not at all if the expert acts again; an episode's last
    step labelled by --terminal once the episode has ended (never for the episode the budget cuts); T: takeover
    length (random model: 1)."""
    rows, E = [], run.expert
    for ep in run.episodes:
        for t, nxt in zip(ep, ep[1:]):
            if not E[nxt] or not E[t]:
                rows.append((t, 0.0 if not E[nxt] else -1.0))
        if mid_takeover(run, ep, T):
            continue  # the expert acts the last step with steps of its takeover still due: never stored
        obs, act, next_obs, term, trunc = run.steps[ep[-1]]
        if (term or trunc) and terminal != "drop":
            rows.append((ep[-1], -1 / (1 - gamma ** (T + 1)) if term and terminal == "penalty" else 0.0))
    return [(s[0], s[1], np.float32(r), s[2], np.float32(1.0 - s[3])) for s, r in ((run.steps[t], r) for t, r in rows)]


def mid_takeover(run, ep, T):
    """The episode `ep` ends while the expert acts with steps of its T-step takeover still due (random model: T = 1)."""
    left = 0
    for t in ep:
        left = left - 1 if left > 0 else (T - 1 if run.expert[t] else 0)  # a hand-back step is the learner's
    return left > 0


def assert_rows(added, want):
    assert len(added) == len(want)
    for i, (got, row) in enumerate(zip(added, want)):
        assert all(np.array_equal(g, np.asarray(w, np.float32)) for g, w in zip(got, row)), f"row {i}: {got} != {row}"


@pytest.fixture(scope="module")
def value_run(tmp_path_factory):
    """One value-model RLIF run (300 steps, no demos) shared by the tests that read it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("value_run"))
        return Run(mp, "--demo-path", "none")


def test_main_stores_what_the_official_loop_stores(value_run):
    run = value_run
    assert len(run.episodes) >= 4 and 0.5 < run.expert.mean() < 0.9  # Hopper falls: several episodes, both act
    asked = {t for t, _ in run.qref_calls}
    ends_in_takeover = 0
    for ep in run.episodes:  # who acts: the rule at every episode's first step, 4-step takeovers, then a hand-back
        left, prev = 0, False
        for t in ep:
            if left > 0:
                assert run.expert[t] and t not in asked, t
                left -= 1
            elif prev:
                assert not run.expert[t] and t not in asked, t  # the learner acts, unchecked
            else:
                assert t in asked, t
                left = 3 if run.expert[t] else 0
            prev = run.expert[t]
        ends_in_takeover += bool(run.expert[ep[-1]])
    assert ends_in_takeover >= 2  # episodes that end while the expert acts (the reset must clear the takeover)
    assert sum(mid_takeover(run, ep, 4) and run.steps[ep[-1]][3] for ep in run.episodes) >= 1  # falls mid-takeover
    want = expected_rows(run)
    assert_rows(run.buffers[0].added, want)
    labels = [row[2] for row in want]
    assert labels.count(-1.0) >= 10 and sum(r < -20 for r in labels) >= 2  # -1 before takeovers, a penalty per fall
    takeover_ends = [t for ep in run.episodes for t, n in zip(ep, ep[1:]) if run.expert[t] and not run.expert[n]]
    step_of = {run.steps[t][0].astype(np.float32).tobytes(): t for t in range(len(run.steps))}
    stored = {step_of[row[0].tobytes()]: row[2] for row in run.buffers[0].added}
    assert len(takeover_ends) >= 10 and all(stored[t] == 0.0 for t in takeover_ends)  # each takeover's last step


def test_value_model_scores_the_reference_action_with_the_reference_critic(value_run):
    run = value_run
    assert len(run.acting) == len(run.steps) and not any(run.acting) and not run.bc_optimisers  # RL: sampled, no BC
    assert np.array_equal(run.qref_policy(run.steps[0][0]), REF)  # Q_ref fitted on the reference (expert) policy
    assert len(run.qref_calls) >= 20
    for t, acts in run.qref_calls:  # (a_learner, a_ref) at every check
        assert np.array_equal(acts[1], REF) and not np.array_equal(acts[0], MEDIUM), t
        if not run.expert[t]:
            assert np.array_equal(acts[0], run.steps[t][1]), t  # the learner's action, the one it then took


def test_random_model_is_a_coin_at_every_step(in_tmp, monkeypatch):
    run = Run(monkeypatch, "--intervention", "random", "--intervene-prob", "0.7", "--demo-path", "none")
    assert run.qref_policy is None and not run.qref_calls  # no reference critic
    assert abs(run.expert.mean() - 0.7) < 0.1  # no takeovers, no hand-back: the expert acts ~70% of the steps
    assert (run.expert[1:] & run.expert[:-1]).sum() > 100
    assert_rows(run.buffers[0].added, expected_rows(run, T=1))


def test_baselines_label_with_the_expert_and_demos_are_relabelled(in_tmp, monkeypatch):
    demos = np.load(os.path.join(DATA, "Hopper-v4-medium.npz"))
    n_demo, fall = len(demos["rewards"]), demos["terminations"] == 1.0
    run = Run(monkeypatch, "--algo", "dagger")
    buffer, labels = run.buffers
    assert not run.expert.any()  # the learner always acts
    assert len(run.acting) == len(run.steps) and not any(run.acting)  # its actions sampled, as officially
    (opt,) = run.bc_optimisers  # BC pre-training: AdamW with the official weight decay 1e-3
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["weight_decay"] == 1e-3
    rew, mask = np.array([r[2] for r in buffer.added[:n_demo]]), np.array([r[4] for r in buffer.added[:n_demo]])
    fall_label = np.float32(-1 / (1 - 0.99**5))  # never env reward
    assert np.array_equal(rew, np.where(fall, fall_label, 0.0)) and np.array_equal(mask, 1.0 - fall)
    assert_rows(buffer.added[n_demo:], expected_rows(run))  # RLIF's rows are kept too (unused by BC)
    clipped = np.clip(demos["actions"], -1 + 1e-5, 1 - 1e-5).astype(np.float32)
    assert np.array_equal(np.array([r[1] for r in labels.added[:n_demo]]), clipped)
    want = [(o, MEDIUM, 0.0, n, 1.0 - term) for o, _, n, term, _ in run.steps]  # the expert's label of every state
    assert_rows(labels.added[n_demo:], want)


def test_step_decision_one_step_at_a_time():
    p = rlif.Transition(np.zeros(2), np.ones(2), 0.0, np.ones(2), 1.0)
    asked = []

    def rule(answer):
        return lambda: asked.append(answer) or answer

    def step(prev_expert, takeover_left, answer, hand_back=True, pending=p):
        return rlif.step_decision(pending, prev_expert, takeover_left, rule(answer), 4 if hand_back else 1, hand_back)

    assert step(True, 2, False) == (True, 1, None) and not asked  # a takeover goes on; the expert's step not stored
    expert, left, store = step(True, 0, True)  # the takeover ended: the learner acts, unchecked
    assert (expert, left, store.rew) == (False, 0, 0.0) and store.obs is p.obs and not asked  # the last expert step
    expert, left, store = step(False, 0, True)  # the rule fires after a learner step: -1 on that step
    assert (expert, left, store.rew) == (True, 3, -1.0) and asked == [True]
    expert, left, store = step(False, 0, False)
    assert (expert, left, store.rew) == (False, 0, 0.0)
    assert step(False, 0, True, pending=None) == (True, 3, None)  # an episode's first step: nothing to store
    assert step(True, 0, True, hand_back=False) == (True, 0, None)  # random model: the expert may act again
    assert step(True, 0, False, hand_back=False)[2].rew == 0.0


def test_terminal_label_is_the_worst_continuation_the_labels_can_express():
    gamma = 0.99
    fall = rlif.terminal_label(0.0, gamma, "penalty", 4)
    assert fall == pytest.approx(-20.40, abs=0.01) and rlif.terminal_label(1.0, gamma, "penalty", 4) == 0.0
    # worst labels: a -1 on each hand-back step, every 5th step (4 expert steps, then 1 learner step, forever)
    worst = -sum(gamma**t for t in range(0, 5000, 5))
    assert fall == pytest.approx(worst, abs=1e-6)  # a fall is never better than any continuation, and no harsher
    assert rlif.terminal_label(0.0, gamma, "penalty", 1) == pytest.approx(-sum(gamma**t for t in range(0, 5000, 2)))
    assert rlif.terminal_label(0.0, gamma, "zero", 4) == 0.0 == rlif.terminal_label(0.0, gamma, "drop", 4)
    p = rlif.Transition(np.zeros(2), np.ones(2), 0.0, np.ones(2), 0.0)
    assert rlif.last_transition(p, gamma, "drop", 4, 0) is None
    assert rlif.last_transition(p, gamma, "penalty", 4, 0).rew == fall
    assert rlif.last_transition(p, gamma, "zero", 4, 0).rew == 0.0
    assert rlif.last_transition(p, gamma, "penalty", 4, 2) is None  # inside a takeover: never stored


def test_value_rule_probabilities():
    u = np.random.default_rng(0).random(20000)
    fired = np.mean([rlif.should_intervene(0.5, 1.0, 0.99, 0.95, x) for x in u])  # 0.5 < 0.99 * 1.0: the rule fires
    quiet = np.mean([rlif.should_intervene(1.0, 1.0, 0.99, 0.95, x) for x in u])  # learner as good as the expert
    close = np.mean([rlif.should_intervene(0.995, 1.0, 0.99, 0.95, x) for x in u])  # within alpha: it does not fire
    assert abs(fired - 0.95) < 0.01 and abs(quiet - 0.05) < 0.01 and abs(close - 0.05) < 0.01
    assert np.mean([rlif.random_intervention(x, 0.7) for x in u]) == pytest.approx(0.7, abs=0.01)


class Countdown(gym.Env):
    """Reward 1 at every step, terminated after 10 steps; the observation is the step count."""
    observation_space = gym.spaces.Box(0, 10, (1,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, seed=None, options=None):
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.full(1, self.t, np.float32), 1.0, self.t == 10, False, {}


def test_fit_qref_regresses_discounted_returns_to_go():
    torch.manual_seed(0)
    q, r2, n = rlif.fit_qref(lambda o: np.zeros(1, np.float32), Countdown(), episodes=2, steps=300, gamma=0.9, seed=0)
    t = np.arange(10)
    returns = (1 - 0.9 ** (10 - t)) / (1 - 0.9)  # sum_{k < 10 - t} 0.9^k from step t on
    with torch.no_grad():
        fit = q(torch.as_tensor(t[:, None], dtype=torch.float32), torch.zeros(10, 1)).numpy()
    assert n == 20 and r2 > 0.95 and np.abs(fit - returns).max() < 0.5


def test_bc_loss_is_the_official_nll_plus_alpha_log_pi():
    torch.manual_seed(0)
    actor = rlif.Actor(4, 2, 16, np.full(2, -2.0), np.full(2, 2.0), num_layers=1)
    obs = torch.randn(64, 4)
    with torch.no_grad():
        act, logp = actor(obs)  # the actor's own samples and their log pi: the loss is -log pi of the labels
        inside = (act.abs() < 2 * 0.999).all(-1)  # (samples beyond the clip are clipped)
        assert inside.sum() > 32
        obs, act, logp = obs[inside], act[inside], logp[inside]
        assert rlif.bc_loss(actor, obs, act).item() == pytest.approx(-logp.mean().item(), rel=1e-4)
        torch.manual_seed(1)
        sample_logp = actor(obs)[1].mean().item()
        torch.manual_seed(1)  # + alpha log pi(a~|s) of a fresh sample
        assert rlif.bc_loss(actor, obs, act, alpha=0.5).item() == pytest.approx(0.5 * sample_logp - logp.mean().item(),
                                                                                 rel=1e-4)
        on_bound, clipped = (rlif.bc_loss(actor, obs, torch.full_like(act, x)).item() for x in (2.0, 2 * 0.999))
        assert on_bound == pytest.approx(clipped, rel=1e-5)  # labels clipped to +-0.999 (scaled), as officially
    # NLL trains the std too: BC on one label per state shrinks it (squared error on the mean would leave it)
    opt, label = torch.optim.Adam(actor.parameters(), lr=1e-2), torch.full_like(act, 0.5)
    std = lambda: actor.log_std(actor.trunk(obs)).exp().mean().item()  # noqa: E731
    before = std()
    for _ in range(100):
        opt.zero_grad()
        rlif.bc_loss(actor, obs, label).backward()
        opt.step()
    assert std() < 0.5 * before


def test_critic_update_bootstraps_only_through_mask_1():
    torch.manual_seed(0)
    actor = rlif.Actor(3, 1, 16, np.full(1, -1.0), np.full(1, 1.0), num_layers=1)
    critic, target = (rlif.CriticEnsemble(3, 1, 2, 16, True, 1) for _ in range(2))
    target.load_state_dict(critic.state_dict())
    args = type("A", (), {"num_min_qs": 2, "gamma": 0.99, "tau": 0.005, "backup_entropy": False})
    b = {"observations": torch.randn(8, 3), "actions": torch.rand(8, 1), "rewards": torch.randn(8),
         "next_observations": torch.randn(8, 3), "masks": torch.tensor([0.0, 1.0] * 4)}
    torch.manual_seed(1)
    with torch.no_grad():
        next_a, _ = actor(b["next_observations"])
        y = b["rewards"][:, None] + 0.99 * b["masks"][:, None] * target(b["next_observations"], next_a).min(0).values
        want = ((critic(b["observations"], b["actions"]) - y) ** 2).mean()
    opt = torch.optim.Adam(critic.parameters(), lr=1e-3)
    torch.manual_seed(1)
    loss, _ = rlif.critic_update(critic, target, actor, opt, list(critic.parameters()), list(target.parameters()), b,
                                 torch.tensor(1.0), args)
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_defaults_are_the_official_config():
    """configs/rlpd_config.py and train_rlif_main.py: 3 x 256, E = 10, Z = 2, LayerNorm, no entropy backup, UTD 1,
    start_training 0, batch 256, offline ratio 0; beta 0.95, takeovers of 4 steps."""
    a = rlif.Args()
    assert (a.num_layers, a.hidden, a.num_qs, a.num_min_qs, a.critic_layer_norm, a.backup_entropy) == (3, 256, 10, 2,
                                                                                                       True, False)
    assert (a.utd, a.start_training, a.batch_size, a.offline_ratio, a.gamma) == (1, 0, 256, 0.0, 0.99)
    assert (a.intervene_beta, a.takeover_steps, a.intervene_prob) == (0.95, 4, 0.5)
    assert a.bc_weight_decay == 1e-3  # the BC baselines' AdamW (run_pen_*dagger.sh: cql.policy_weight_decay)


def test_reference_critic_prefers_expert_actions():
    torch.manual_seed(0)
    env = make_env("Hopper-v4", 0)()
    expert = load_policy(os.path.join(DATA, "Hopper-v4-expert-policy.npz"))
    q, r2, n = rlif.fit_qref(expert, env, episodes=4, steps=800, gamma=0.99, seed=0)
    assert n > 1000 and r2 > 0.5
    obs = np.load(os.path.join(DATA, "Hopper-v4-expert.npz"))["observations"][::50][:100]
    rng = np.random.default_rng(0)
    with torch.no_grad():
        q_exp = q(torch.as_tensor(obs), torch.as_tensor(expert(obs)))
        q_rand = q(torch.as_tensor(obs), torch.as_tensor(rng.uniform(-1, 1, (len(obs), 3)), dtype=torch.float32))
    assert (q_exp > q_rand).float().mean() > 0.7


def run_cli(tmp, *extra):
    cmd = [sys.executable, os.path.join(ROOT, "rlif.py"), "--total-timesteps", "400", "--start-training", "100",
           "--utd", "1", "--num-qs", "2", "--hidden", "32", "--eval-every", "400", "--eval-episodes", "1",
           "--qref-episodes", "2", "--qref-steps", "100", "--bc-every", "200", "--bc-updates", "20", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp)


def test_cli_all_three_algorithms(in_tmp):
    for extra in (["--algo", "rlif", "--terminal", "drop", "--offline-ratio", "0.5"],
                  ["--algo", "hg-dagger", "--intervention", "random"], ["--algo", "dagger"]):
        out = run_cli(in_tmp, *extra)
        assert out.returncode == 0, out.stderr[-2000:]
        takeovers, expert_steps, minus_one = (int(x) for x in re.findall(
            r"takeovers (\d+), expert steps (\d+) of 400, -1 labels (\d+)", out.stdout)[0])
        assert minus_one <= takeovers and (takeovers > 0) == (extra[1] != "dagger")
        assert re.search(r"reference policy \(a_ref, Q_ref\): \S*Hopper-v4-expert-policy.npz", out.stdout)
        assert "eval/success" not in out.stdout + out.stderr  # MuJoCo: no success flag, none shown
    runs = sorted(glob.glob(str(in_tmp / "runs" / "*")))
    assert len(runs) == 3 and all(os.path.exists(os.path.join(r, "model.pt")) for r in runs)
    for r in runs:
        rows = open(os.path.join(r, "metrics.csv")).read()
        assert "charts/intervention_rate" in rows and "eval/return" in rows and "eval/success" not in rows


def test_cli_bad_input_is_one_sentence(in_tmp):
    out = run_cli(in_tmp, "--expert-level", "great")
    assert out.returncode == 1 and "Traceback" not in out.stderr and "Unknown --expert-level 'great'" in out.stderr
    out = run_cli(in_tmp, "--num-min-qs", "3")
    assert out.returncode == 1 and "--num-min-qs (3) must be between 1 and --num-qs (2)" in out.stderr
    out = run_cli(in_tmp, "--env-id", "Walker2d-v4", "--demo-path", os.path.join(DATA, "Hopper-v4-medium.npz"))
    assert out.returncode == 1 and "Traceback" not in out.stderr and "holds observations of shape (11,)" in out.stderr


def test_update_steps_are_rlpds_word_for_word():
    """rlif.py's SAC updates (and so --compile, which wraps them) are rlpd.py's, tested there."""
    import inspect

    import rlpd
    for name in ("critic_update", "actor_temperature_update", "subset_min_target", "td_target", "critic_loss",
                 "actor_loss", "temperature_loss"):
        assert inspect.getsource(getattr(rlif, name)) == inspect.getsource(getattr(rlpd, name)), name
    assert "compile" in rlif.Args.__dataclass_fields__

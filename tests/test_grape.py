"""GRAPE (grape_tpo.py): the TPO loss (shape, sign, value, gradient -> 0 with beta at pi = pi_ref), the SFT NLL,
margins and the official windows (flattened over pairs, shuffled, one step each), pairing within groups that share a
start, R_self (the official clipped sum), R_ext and its stage progress, what SFT and TPO may change (and what main()'s
fresh per-iteration AdamW trains against that iteration's frozen pi_ref), sampling's log-probs, CLI end to end and
bad input, and the docstring map's names. tools/mutants.py's GRAPE section lists the mutants these tests kill."""
import copy
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import tyro

import grape_tpo as G
from conftest import ROOT


def small_model(**kw):
    args = tyro.cli(G.Args, args=["--d-model", "32", "--n-layers", "1"] + sum(
        ([f"--{k.replace('_', '-')}", str(v)] for k, v in kw.items()), []))
    d = np.load(os.path.join(ROOT, "data", "metaworld-push-v3.npz"))
    model = G.VLA(["push", "reach"], 39, 4, args, d["observations"].mean(0), d["observations"].std(0) + 1e-3)
    return model, args, d


def test_tpo_loss_shape_sign_and_preferring_the_winner_lowers_it():
    zero = torch.zeros(5)
    m = G.preference_margins(zero, zero, zero, zero)
    assert m.shape == (1,) and torch.isclose(G.tpo_loss(m, 0.1), torch.log(torch.tensor(2.0)))
    up = G.preference_margins(zero + 1.0, zero, zero, zero)  # pi gives zeta_w more likelihood than pi_ref
    down = G.preference_margins(zero, zero, zero + 1.0, zero)  # ... or zeta_l more
    assert up.item() == 5.0 and down.item() == -5.0
    assert G.tpo_loss(up, 0.1) < np.log(2) < G.tpo_loss(down, 0.1)
    assert G.tpo_loss(up, 0.1).item() == pytest.approx(np.log1p(np.exp(-0.5)))  # -log sigmoid(beta * margin)


def test_margins_truncate_to_the_shorter_and_sum_steps():
    w, l_ = torch.arange(6.0), torch.zeros(4)  # T = 4 after truncation
    assert G.preference_margins(w, torch.zeros(6), l_, l_).item() == 0 + 1 + 2 + 3
    assert G.preference_margins(w, w, l_ + 1, l_).item() == -4  # log pi - log pi_ref of each rollout, summed


def test_windows_of_all_pairs_flattened_shuffled_one_step_each():
    """As finetune.py: every stride-1 window of every pair (cut to its shorter rollout), all pairs' windows in one
    shuffled list, one optimiser step and one -log sigmoid(beta x window margin) each; --tpo-window 0: whole pairs."""
    torch.manual_seed(0)
    model, _, d = small_model()
    trajs = [{"obs": d["observations"][s:s + n], "act": d["actions"][s:s + n], "task": "push-v3"}
             for s, n in ((0, 10), (20, 12), (40, 9), (60, 9))]
    pairs = [(0, 1), (3, 2)]
    windows = G.tpo_windows(trajs, pairs, 8, np.random.default_rng(1))
    flat = [(0, t) for t in range(3)] + [(1, t) for t in range(2)]  # T 10: 3 windows of 8 steps, T 9: 2
    assert sorted((p, s.start) for p, s in windows) == flat and [(p, s.start) for p, s in windows] != flat
    assert all(s.stop - s.start == 8 for _, s in windows)
    assert [(p, s.start, s.stop) for p, s in G.tpo_windows(trajs, pairs, 0, np.random.default_rng(1))] in (
        [(0, 0, 10), (1, 0, 9)], [(1, 0, 9), (0, 0, 10)])  # window 0: one per pair, the whole shorter length
    ref = copy.deepcopy(model).requires_grad_(False)
    with torch.no_grad():
        ref_logp = {i: G.step_log_probs(ref, trajs[i]) for i in range(4)}
    opt = torch.optim.AdamW(model.tpo_param_groups(0.0), lr=1e-2)
    model_at_start = copy.deepcopy(model)
    losses, margins = G.tpo_epoch(model, opt, trajs, pairs, windows, ref_logp, 0.1)
    assert int(opt.state[model.log_std]["step"]) == len(losses) == 5  # one optimiser step per window
    assert losses[0] == pytest.approx(np.log(2), abs=1e-6)  # pi = pi_ref
    assert np.allclose(losses, np.logaddexp(0, -0.1 * np.array(margins)), atol=1e-6)
    p, s = windows[0]
    w, lo = pairs[p]
    m0 = (G.step_log_probs(model_at_start, trajs[w], s) - ref_logp[w][s]).sum() - (
        G.step_log_probs(model_at_start, trajs[lo], s) - ref_logp[lo][s]).sum()
    assert margins[0] == pytest.approx(m0.item(), abs=1e-5) and abs(margins[-1]) > 1e-4


def test_gradient_at_pi_ref_is_linear_in_beta_and_vanishes_with_it():
    """dL/dtheta = -beta sigmoid(-beta * 0) (grad log pi(zeta_w) - grad log pi(zeta_l)) at pi = pi_ref."""
    torch.manual_seed(0)
    model, _, d = small_model()
    ref = copy.deepcopy(model).requires_grad_(False)
    tw, tl = ({"obs": d["observations"][s], "act": d["actions"][s], "task": "push-v3"} for s in (slice(20), slice(20, 40)))

    def grad(beta):
        model.zero_grad()
        m = G.preference_margins(G.step_log_probs(model, tw), G.step_log_probs(ref, tw),
                                 G.step_log_probs(model, tl), G.step_log_probs(ref, tl))
        assert abs(m.item()) < 1e-4  # pi = pi_ref: the margin is 0
        G.tpo_loss(m, beta).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    g1, g2 = grad(1e-2), grad(1e-4)
    assert g1.norm() > 0 and torch.allclose(g1 / 1e-2, g2 / 1e-4, rtol=1e-3, atol=1e-6)
    assert grad(0.0).abs().max() == 0


def test_pairs_top_with_bottom_skip_ties_and_never_self():
    assert G.make_pairs([0.1, 5.0, 3.0, -1.0], 1) == [(1, 3)]
    assert G.make_pairs([0.1, 5.0, 3.0, -1.0], 2) == [(1, 3), (2, 0)]
    assert G.make_pairs([0.0, 0.0, 5.0, 0.0], 2) == [(2, 3)]  # the two zeros in the middle tie: no pair
    assert G.make_pairs([1.0, 2.0, 3.0], 2) == [(2, 0)]  # 3 rollouts: one pair at most


def test_reward_aggregation_and_stage_costs():
    assert G.gcpg_reward(-2.0, 0.5, True, 0.1, 1.0, 5.0) == pytest.approx(-0.2 + 0.5 + 5.0)
    assert G.external_reward([0.5, 1.0], 0, 0.1, 1.0) == pytest.approx(1 / 3)  # every stage within the threshold
    assert G.external_reward([11.0, 1.0], 1, 0.1, 1.0) == pytest.approx((1 + np.exp(-1.0)) / 3)
    assert G.external_reward([11.0, 21.0], 2, 0.1, 1.0) == pytest.approx((2 + np.exp(-3.0)) / 3)  # product
    o = np.zeros((3, 39))
    o[:, 4:7] = [0.0, 0.6, 0.02]  # object
    o[:, 36:39] = [0.1, 0.8, 0.02]  # goal
    o[:, 0:3] = [[0.0, 0.3, 0.02], [0.0, 0.5, 0.05], [0.0, 0.6, 0.03]]  # the hand reaches the object at the end
    # stage 1 (reach the object) lasts until the hand is within 3 cm: steps 0-2, distances 30, 10 and 1 cm
    c, done = G.stage_costs(o, "push-v3", 3.0)
    assert c[0] == pytest.approx(30 + np.hypot(10, 3) + 1) and c[1] == 0.0  # stage 2 never began: no steps, no cost
    assert done == 1
    c, done = G.stage_costs(o, "push-v3", 20.0)  # a wider tolerance: stage 1 ends at step 1, stage 2 pays steps 2..
    assert c[0] == pytest.approx(30 + np.hypot(10, 3)) and c[1] == pytest.approx(100 * np.hypot(0.1, 0.2))
    assert done == 1  # the object is 22 cm from the goal: stage 2 not done
    slow = np.concatenate([o[:1].repeat(5, 0), o])  # five more steps far away cost more
    assert G.stage_costs(slow, "push-v3", 3.0)[0][0] > G.stage_costs(o, "push-v3", 3.0)[0][0] + 100
    assert len(G.stage_costs(o, "pick-place-v3", 3.0)[0]) == 3


def test_r_self_is_the_official_clipped_sum():
    """R_self = sum_t log max(p_t, 0.05) (maniskill2_evaluator.py), a density p_t capped at 1: every term <= 0."""
    assert G.self_reward(np.array([-1.0, -4.0, 0.5])) == pytest.approx(-1.0 + np.log(0.05) + 0.0)
    assert G.self_reward(np.full(20, -0.5)) < G.self_reward(np.full(10, -0.5))  # a length penalty


def test_stage_progress_ranks_before_cost():
    """A rollout that got further (reached a later stage) ranks above one stuck before it, whatever the costs."""
    far = np.zeros((100, 39))
    far[:, 4:7], far[:, 36:39] = [0.0, 0.6, 0.02], [0.0, 0.8, 0.02]  # object, goal 20 cm away
    further = far.copy()
    far[:, 0:3] = [0.0, 0.56, 0.02]  # the hand hovers 4 cm from the object: stage 1 never done, 400 cm x steps
    further[:, 0:3] = [0.0, 0.6, 0.02]  # the hand at the object at once; the object stays 20 cm from the goal
    (c_far, d_far), (c_further, d_further) = (G.stage_costs(o, "push-v3", 3.0) for o in (far, further))
    assert (d_far, d_further) == (0, 1) and c_further.sum() > c_far.sum() + 1000  # further, but it cost more
    r_far, r_further = (G.external_reward(c, d, 0.001, 0.0) for c, d in ((c_far, d_far), (c_further, d_further)))
    assert r_further > r_far and r_far == pytest.approx(np.exp(-0.4) / 3)
    assert G.external_reward(c_far * 0.5, 0, 0.001, 0.0) > r_far  # same progress: the lower cost ranks higher


def test_sft_changes_base_and_head_keeps_lora_zero_tpo_changes_only_lora_and_head():
    torch.manual_seed(0)
    model, args, d = small_model()
    o, a = torch.as_tensor(d["observations"][:64]), torch.as_tensor(d["actions"][:64])
    words = model.tokens("push-v3")[None].expand(64, -1)
    opt = torch.optim.Adam(model.base_params(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(5):
        loss = G.sft_loss(model, o, words, a)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(p.B, torch.zeros_like(p.B)) for p in model.modules() if isinstance(p, G.LoRALinear))
    assert not torch.equal(model.state.weight, before[[n for n, _ in model.named_parameters()].index("state.weight")])
    ref = copy.deepcopy(model).requires_grad_(False)
    trained = [p for g in model.tpo_param_groups(0.01) for p in g["params"]]
    base = [p.detach().clone() for p in model.base_params() if all(p is not q for q in trained)]
    tpo = torch.optim.AdamW(model.tpo_param_groups(0.01), lr=1e-3)
    tw = {"obs": o[:32], "act": a[:32], "task": "push-v3"}
    tl = {"obs": o[32:], "act": a[32:] + 0.3, "task": "push-v3"}
    m = G.preference_margins(G.step_log_probs(model, tw), G.step_log_probs(ref, tw),
                             G.step_log_probs(model, tl), G.step_log_probs(ref, tl))
    tpo.zero_grad()
    G.tpo_loss(m, 0.1).backward()
    tpo.step()
    after = [p for p in model.base_params() if all(p is not q for q in trained)]
    assert all(torch.equal(x, y) for x, y in zip(base, after))  # backbone base weights frozen in TPO
    assert any(not torch.equal(p.B, torch.zeros_like(p.B)) for p in model.modules() if isinstance(p, G.LoRALinear))


def test_sampling_keeps_the_raw_action_and_its_log_prob():
    torch.manual_seed(0)
    model, args, _ = small_model()
    with torch.no_grad():
        model.log_std.fill_(0.5)  # wide: many raw samples fall outside [-1, 1]
    envs = [G.make_env("metaworld/push-v3", 1, 15)() for _ in range(3)]
    envs[0].reset(seed=5)  # another history: reset_to must still give the group's start
    trajs = G.sample_trajectories(model, envs, ["push-v3"] * 3, [(3, 7), (3, 7), (4, 7)], 15)
    assert all(len(t["obs"]) == len(t["act"]) == len(t["logp"]) == 15 for t in trajs)
    assert np.abs(trajs[0]["act"]).max() > 1  # stored raw, not clipped
    assert np.array_equal(trajs[0]["obs"][0], trajs[1]["obs"][0])  # one start: one initial state
    assert not np.allclose(trajs[0]["obs"][0], trajs[2]["obs"][0])  # another MT1 task: another goal
    assert not np.allclose(trajs[0]["obs"][5], trajs[1]["obs"][5])  # the stochastic policy: the rollouts differ
    lp = G.step_log_probs(model, trajs[0])
    assert np.allclose(lp.detach().numpy(), trajs[0]["logp"], atol=1e-4)


def run_cli(cwd, *extra):
    cmd = [sys.executable, os.path.join(ROOT, "grape_tpo.py"), "--d-model", "32", "--n-layers", "1", "--sft-steps", "30",
           "--num-iterations", "1", "--num-init-states", "1", "--samples-per-state", "2", "--max-episode-steps", "20",
           "--eval-episodes", "1", "--tpo-epochs", "2", "--train-tasks", "push-v3", "reach-v3",
           "--heldout-tasks", "drawer-close-v3", "--num-demo-episodes", "2", *extra]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_end_to_end(in_tmp):
    out = run_cli(in_tmp, "--tpo-window", "1")
    assert out.returncode == 0, out.stderr[-2000:]
    run = os.path.join(in_tmp, "runs", os.listdir(os.path.join(in_tmp, "runs"))[0])
    ckpt = torch.load(os.path.join(run, "model.pt"), weights_only=False)
    assert [r[0] for r in ckpt["results"]] == [0, 1] and ckpt["interrupted"] is False
    keys = {line.split(",")[1] for line in open(os.path.join(run, "metrics.csv")).readlines()[1:]}
    assert {"eval/success_train", "eval/success_heldout", "losses/sft_nll", "charts/pairs", "eval/success/push-v3"} <= keys
    assert "model: runs/" in out.stdout


def test_cli_bad_input_is_one_sentence(in_tmp):
    out = run_cli(in_tmp, "--heldout-tasks", "push-v3")
    assert out.returncode == 1 and "--heldout-tasks must not overlap --train-tasks" in out.stderr
    out = run_cli(in_tmp, "--num-pairs", "2")
    assert out.returncode == 1 and "--num-pairs (2) must be between 1 and half of --samples-per-state (2)" in out.stderr
    out = run_cli(in_tmp, "--num-demo-episodes", "500")
    assert out.returncode == 1 and "more than the 50 episodes" in out.stderr and "Traceback" not in out.stderr
    out = run_cli(in_tmp, "--train-tasks", "no-such-task-v3")
    assert out.returncode == 1 and "Unknown env id 'metaworld/no-such-task-v3'" in out.stderr


def test_docstring_map_names_exist():
    """Every `-> name()` of the module docstring's map names a function or class of the file."""
    names = [n for line in G.__doc__.splitlines() if "->" in line
             for n in re.findall(r"(\w+)\(\)", line.split("->")[-1])]
    assert len(names) >= 10 and all(callable(getattr(G, n, None)) for n in names), names


def test_sft_loss_is_the_gaussian_nll():
    torch.manual_seed(0)
    model, _, d = small_model()
    with torch.no_grad():
        model.log_std.copy_(torch.tensor([-1.0, -0.5, 0.0, 0.3]))
    o, a = torch.as_tensor(d["observations"][:16]), torch.as_tensor(d["actions"][:16])
    words = model.tokens("push-v3")[None].expand(16, -1)
    mu, log_std = model.dist(o, words).mean, model.log_std
    nll = (0.5 * ((a - mu) / log_std.exp()) ** 2 + log_std + 0.5 * np.log(2 * np.pi)).sum(-1).mean()
    assert torch.allclose(G.sft_loss(model, o, words, a), nll, atol=1e-5)


def test_groups_share_a_start_and_pairs_stay_within_them(monkeypatch):
    """sample_groups() gives the M envs of a task one start per round (sample_trajectories() then resets them alike,
    see the sampling test); pair_groups() pairs only within a group."""
    rounds = []

    def fake_sample(model, envs, tasks, starts, max_steps):
        rounds.append(starts)
        return [{"task": t, "start": st} for t, st in zip(tasks, starts)]

    monkeypatch.setattr(G, "sample_trajectories", fake_sample)
    M, tasks = 2, ["push-v3", "push-v3", "reach-v3", "reach-v3"]
    trajs = G.sample_groups(None, [None] * 4, tasks, M, 2, 3, np.random.default_rng(0))
    assert len(rounds) == 2 and [t["task"] for t in trajs] == tasks * 2  # per round, M consecutive rollouts per task
    starts = [tuple(map(int, t["start"])) for t in trajs]
    assert all(starts[2 * g] == starts[2 * g + 1] for g in range(4))  # a group: M rollouts from one initial state
    assert len(set(starts)) == 4  # each task and round its own start
    assert all(0 <= k < 50 for k, _ in starts)  # one of MT1's 50 goal/object placements
    scores = [0.0, 1.0, 5.0, 4.0, -1.0, -2.0, 3.0, 3.0]  # the best (2) and the worst (5) are in different groups
    assert G.pair_groups(scores, 2, 1) == [(1, 0), (2, 3), (4, 5)]  # within each group; the tie (6, 7) skipped
    assert G.pair_groups([0.0, 3.0, 1.0, 2.0, 9.0, 8.0, 7.0, 6.0], 4, 2) == [(1, 0), (3, 2), (4, 7), (5, 6)]


def test_main_tpo_trains_lora_and_head_vs_frozen_ref(in_tmp, monkeypatch):
    """main() on a tiny budget (2-step windows): each iteration starts a fresh AdamW at --tpo-lr over exactly LoRA +
    head (weight decay 0.01) and log_std (none), the backbone never moves, LoRA was zero after SFT, pi_ref's log-probs
    are those of the policy at the iteration's start, one step per window of each pair, and each step's loss is
    -log sigmoid(0.1 x margin) alone (no SFT term), log 2 at each iteration's first step (pi = pi_ref)."""
    calls, tpo_epoch = [], G.tpo_epoch

    def spy(model, opt, trajs, pairs, windows, ref_logp, beta):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        state = len(opt.state)
        losses, margins = tpo_epoch(model, opt, trajs, pairs, windows, ref_logp, beta)
        after = {n: p.detach().clone() for n, p in model.named_parameters()}
        calls.append(dict(model=model, opt=opt, state=state, trajs=trajs, pairs=pairs, windows=windows,
                          ref_logp=ref_logp, before=before, after=after, losses=losses, margins=margins))
        return losses, margins

    monkeypatch.setattr(G, "tpo_epoch", spy)
    monkeypatch.setattr(G, "evaluate", lambda *a, **k: (0.0, 0.0))  # no evaluation episodes: training is tested
    monkeypatch.setattr(sys, "argv", ["grape_tpo.py", "--d-model", "16", "--n-layers", "1", "--sft-steps", "3",
                                      "--batch-size", "16", "--num-iterations", "2", "--num-init-states", "1",
                                      "--samples-per-state", "2", "--max-episode-steps", "6", "--tpo-epochs", "2",
                                      "--tpo-lr", "1e-3", "--tpo-window", "2", "--train-tasks", "push-v3",
                                      "--heldout-tasks", "reach-v3", "--num-demo-episodes", "1"])
    assert G.main() == 0
    assert len(calls) == 4  # 2 iterations x 2 epochs, one pair each
    model = calls[0]["model"]
    names = {id(p): n for n, p in model.named_parameters()}
    lora_head = {n for n in names.values() if n.endswith((".A", ".B")) or n.startswith("action_head.")}
    for c in calls:
        groups = [({names[id(p)] for p in g["params"]}, g["weight_decay"]) for g in c["opt"].param_groups]
        assert groups == [(lora_head, 0.01), ({"log_std"}, 0.0)] and isinstance(c["opt"], torch.optim.AdamW)
        assert c["opt"].param_groups[0]["lr"] == 1e-3
    assert calls[0]["opt"] is calls[1]["opt"] and calls[2]["opt"] is not calls[0]["opt"]  # one AdamW per iteration
    assert calls[0]["state"] == 0 and calls[2]["state"] == 0 and calls[1]["state"] > 0  # ... each starts fresh
    tpo = lora_head | {"log_std"}
    first, last = calls[0]["before"], calls[-1]["after"]
    assert all(torch.equal(first[n], last[n]) for n in names.values() if n not in tpo)  # the backbone never moves
    assert all(not torch.equal(first[n], last[n]) for n in ("log_std", "action_head.2.weight", "blocks.0.qkv.B"))
    assert all(not first[n].any() for n in tpo if n.endswith(".B"))  # SFT left LoRA at zero
    for c in calls[::2]:  # pi_ref = the policy at the start of the iteration (its first epoch)
        start = copy.deepcopy(model)
        start.load_state_dict(c["before"], strict=False)
        assert c["ref_logp"] and all(torch.allclose(v, G.step_log_probs(start, c["trajs"][i]).detach(), atol=1e-5)
                                     for i, v in c["ref_logp"].items())
        w, lo = c["pairs"][0]
        assert len(c["windows"]) == min(len(c["trajs"][w]["act"]), len(c["trajs"][lo]["act"])) - 1  # 2-step windows
        assert c["losses"][0] == pytest.approx(np.log(2), abs=1e-6)  # pi = pi_ref: margin 0
    sft = copy.deepcopy(model)
    sft.load_state_dict(calls[0]["before"], strict=False)
    i, v = next(iter(calls[2]["ref_logp"].items()))
    assert not torch.allclose(v, G.step_log_probs(sft, calls[2]["trajs"][i]).detach(), atol=1e-4)  # not the SFT's
    losses, margins = np.concatenate([c["losses"] for c in calls]), np.concatenate([c["margins"] for c in calls])
    assert len(losses) == sum(len(c["windows"]) for c in calls) and np.abs(margins).max() > 1e-3
    assert np.allclose(losses, np.logaddexp(0, -0.1 * margins), atol=1e-6)  # -log sigmoid(beta margin), beta 0.1

"""iRe-VLA lite: head shapes, LoRA identity at start, what each stage may change, D_RL filter, SFT convergence."""
import os

import numpy as np
import torch
import tyro

import ire_vla_lite as V
from conftest import ROOT


class NoLog:
    def log(self, step, **kw):
        pass

    def steps(self, iterable):  # as Logger.steps without a signal
        return iterable


def small_model(**kw):
    args = tyro.cli(V.Args, args=["--d-model", "32", "--n-layers", "1", "--num-steps", "20", "--rl-steps", "40",
                                  "--num-envs-per-task", "1", "--max-episode-steps", "30", "--batch-size", "64"] + sum(
        ([f"--{k.replace('_', '-')}", str(v)] for k, v in kw.items()), []))
    d = np.load(os.path.join(ROOT, "data", "metaworld-reach-v3.npz"))
    model = V.VLA(["reach", "push", "window", "close"], 39, 4, args, d["observations"].mean(0), d["observations"].std(0) + 1e-3)
    return model, args, d


def snapshot(params):
    return [p.detach().clone() for p in params]


def changed(before, params):
    return any(not torch.equal(a, b) for a, b in zip(before, params))


def test_head_shapes_and_tokens():
    torch.manual_seed(0)
    model, _, _ = small_model()
    words = V.pad_words(model, ["reach-v3", "window-close-v3"])
    assert words.shape == (2, 4) and words[0, 1] == len(model.vocab) + 1  # padded
    assert model.tokens("door-close-v3")[0] == len(model.vocab)  # unknown word
    f = model.backbone(torch.randn(2, 39), words)
    assert model.action_head(f).shape == (2, 4) and model.critic_head(f).shape == (2, 1)


def test_lora_starts_as_identity_and_scales_by_alpha_over_r():
    torch.manual_seed(0)
    layer = V.LoRALinear(8, 5, 4, alpha=16.0)
    x = torch.randn(3, 8)
    assert torch.equal(layer(x), layer.base(x)) and layer.scale == 4.0
    with torch.no_grad():
        layer.B.fill_(0.1)
    assert torch.allclose(layer(x) - layer.base(x), 4.0 * (x @ layer.A.T) @ layer.B.T)


def test_rl_stage_freezes_backbone_and_sft_stage_changes_it():
    torch.manual_seed(0)
    model, args, d = small_model()
    rng = np.random.default_rng(0)
    base, lora, heads = model.backbone_params(lora=False), model.backbone_params(lora=True), model.head_params()
    b0, l0, h0 = snapshot(base), snapshot(lora), snapshot(heads)
    trajs = V.rl_stage(model, ["reach-v3"], args, rng, NoLog(), "rl")
    assert trajs and not changed(b0, base) and not changed(l0, lora) and changed(h0, heads)
    data = {"obs": torch.as_tensor(d["observations"]), "act": torch.as_tensor(d["actions"]),
            "words": V.pad_words(model, ["reach-v3"] * len(d["actions"]))}
    V.sft_stage(model, data, model.head_params() + lora, 20, args, rng, NoLog(), "sft")
    assert changed(l0, lora) and not changed(b0, base)  # even stages train LoRA (and heads), not the base weights
    V.rl_stage(model, ["reach-v3"], args, rng, NoLog(), "rl", whole_model=True)
    assert changed(b0, base)  # the plain-RL baseline moves everything


def test_d_rl_gets_only_successful_trajectories():
    trajs = [{"success": True, "act": 1}, {"success": False, "act": 2}, {"success": True, "act": 3}]
    assert [t["act"] for t in V.successful(trajs)] == [1, 3]


def test_sft_lowers_the_loss_quickly():
    torch.manual_seed(0)
    model, args, d = small_model()
    obs, act = torch.as_tensor(d["observations"]), torch.as_tensor(d["actions"])
    words = V.pad_words(model, ["reach-v3"] * len(act))
    before = V.sft_loss(model, obs, words, act).item()
    V.sft_stage(model, {"obs": obs, "act": act, "words": words}, list(model.parameters()), 300, args,
                np.random.default_rng(0), NoLog(), "sft0")
    assert V.sft_loss(model, obs, words, act).item() < 0.3 * before


def test_cli_rejects_overlapping_splits(in_tmp):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, os.path.join(ROOT, "ire_vla_lite.py"), "--heldout-tasks", "reach-v3"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr and "must not overlap" in out.stderr


def test_ppo_stores_the_raw_sample_and_its_log_prob_and_d_rl_the_clipped_action(monkeypatch):
    """With std 2, many raw samples leave [-1, 1]: PPO's buffer must hold them with their own log-prob (the
    policy's log-prob of the raw sample), the env and D_RL the clipped action."""
    torch.manual_seed(0)
    model, args, _ = small_model(action_std=2.0, update_epochs=1, num_minibatches=1)
    seen = {}

    orig_loss = V.ppo_loss

    def spy(new_logp, old_logp, adv, clip_coef):
        seen.setdefault("first", (new_logp.detach().clone(), old_logp.clone()))
        return orig_loss(new_logp, old_logp, adv, clip_coef)

    monkeypatch.setattr(V, "ppo_loss", spy)
    orig = V.sample_action

    def record(dist):
        a, logp, a_env = orig(dist)
        seen.setdefault("raw", []).append((a, logp, dist.log_prob(a).sum(-1), a_env))
        return a, logp, a_env

    monkeypatch.setattr(V, "sample_action", record)
    trajs = V.rl_stage(model, ["reach-v3"], args, np.random.default_rng(0), NoLog(), "rl")
    raw = torch.cat([a for a, _, _, _ in seen["raw"]])
    assert (raw.abs() > 1).any()  # some samples were clipped for the env
    for a, logp, logp_raw, a_env in seen["raw"]:
        assert torch.equal(logp, logp_raw) and torch.equal(a_env, a.clamp(-1, 1))
    new_logp, old_logp = seen["first"]  # first minibatch, policy unchanged: log-prob of the stored (raw) action
    assert torch.allclose(new_logp, old_logp, atol=1e-5)
    acts = np.concatenate([t["act"] for t in trajs])
    assert np.abs(acts).max() <= 1.0 and (np.abs(acts) == 1.0).any()  # D_RL: the clipped actions


def test_gae_bootstraps_a_time_limit_and_not_a_termination():
    rew, val = torch.zeros(1, 2), torch.tensor([[0.5, 0.5]])
    done = torch.ones(1, 2)  # both episodes end at t = 0: env 0 by time limit (V(final) = 0.8), env 1 by success
    next_val = torch.tensor([[0.8, 0.0]])
    adv, ret = V.gae(rew, val, next_val, done, 0.9, 0.95)
    assert torch.allclose(adv, torch.tensor([[0.9 * 0.8 - 0.5, -0.5]]))


def test_rl_stage_bootstraps_truncated_episodes(monkeypatch):
    """Episodes of 30 steps in a 20-step rollout with no success: every episode end is a time limit, and its
    V(s_{t+1}) must be the critic's value of the final observation, not 0."""
    torch.manual_seed(0)
    model, args, _ = small_model(num_steps=40, rl_steps=40, update_epochs=1)
    with torch.no_grad():
        model.critic_head[2].bias.fill_(5.0)  # V clearly non-zero everywhere
    seen = {}
    orig = V.gae

    def spy(rew, val, next_val, done, gamma, lam):
        seen.update(rew=rew, next_val=next_val, done=done)
        return orig(rew, val, next_val, done, gamma, lam)

    monkeypatch.setattr(V, "gae", spy)
    V.rl_stage(model, ["reach-v3"], args, np.random.default_rng(0), NoLog(), "rl")
    ends = seen["done"] > 0
    assert ends.sum() == 1 and seen["rew"][ends].sum() == 0  # one time limit at step 30, no success
    assert seen["next_val"][ends].abs().min() > 1.0


def test_stage_0_trains_the_base_and_heads_and_keeps_lora_at_zero(in_tmp, monkeypatch):
    """Stage 0 is the lite backbone's pre-training: base weights and heads learn, LoRA's B stays 0 (identity), so
    the later SFT stages adapt a trained base through LoRA."""
    import glob
    import sys

    seen, sft_stage = {}, V.sft_stage

    def spy(model, data, params, steps, *a):
        ids = {id(p) for p in params}
        seen[a[-1]] = [ids >= {id(p) for p in model.backbone_params(lora=False)},
                       ids >= {id(p) for p in model.head_params()},
                       not ids & {id(p) for p in model.backbone_params(lora=True)}]
        return sft_stage(model, data, params, steps, *a)

    monkeypatch.setattr(V, "sft_stage", spy)
    threads = torch.get_num_threads()
    monkeypatch.setattr(sys, "argv", ["ire_vla_lite.py", "--expert-tasks", "reach-v3", "--rl-tasks", "window-close-v3",
                                      "--heldout-tasks", "door-close-v3", "--num-iterations", "0", "--sft0-steps", "20",
                                      "--eval-episodes", "1", "--d-model", "32", "--n-layers", "1", "--batch-size", "64"])
    try:
        V.main()
    finally:
        torch.set_num_threads(threads)
    assert seen == {"sft0": [True, True, True]}  # base + heads trained, no LoRA parameter given to the optimizer
    saved = torch.load(glob.glob(str(in_tmp / "runs" / "*" / "model.pt"))[0], weights_only=False)["model"]
    lora_b = [k for k in saved if k.endswith(".B")]
    assert lora_b and all(torch.count_nonzero(saved[k]) == 0 for k in lora_b)


def test_rollout_stores_each_step_s_own_observation(monkeypatch):
    """D_RL trajectories and PPO's batch must hold the observation each action was taken in, not a view of the
    rollout array that the next env step overwrites (which stored one observation repeated for a whole rollout)."""
    torch.manual_seed(0)
    model, args, _ = small_model(update_epochs=1, num_minibatches=1, rl_steps=20, max_episode_steps=10)
    updated = []
    orig = model.backbone

    def spy(obs, words):
        if torch.is_grad_enabled():  # PPO's update on the whole model (the rollout runs under no_grad)
            updated.append(obs.detach().clone())
        return orig(obs, words)

    monkeypatch.setattr(model, "backbone", spy)
    trajs = V.rl_stage(model, ["reach-v3"], args, np.random.default_rng(0), NoLog(), "rl", whole_model=True)
    assert len(trajs) == 2  # two 10-step episodes in one 20-step rollout
    for t in trajs:  # every step of a trajectory has its own observation (the arm moves)
        assert len(np.unique(t["obs"], axis=0)) == len(t["obs"]) == 10
    stored = torch.as_tensor(np.concatenate([t["obs"] for t in trajs]))
    updated = torch.cat(updated)  # one epoch, one minibatch: the rollout's 20 observations in random order
    assert len(updated) == 20 and torch.equal(torch.unique(updated, dim=0), torch.unique(stored, dim=0))

"""iRe-VLA lite: head shapes, LoRA identity at start, the losses, what each stage of main() changes in every mode,
D_RL filter and its way into the SFT data, the rollout's data (raw samples, bootstrapped time limits, copies)."""
import glob
import os
import sys

import numpy as np
import pytest
import torch
import tyro

import ire_vla_lite as V
from conftest import ROOT


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread (the machine is shared); main() sets --threads for the process, so it is restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    obs = d["observations"]
    model = V.VLA(["reach", "push", "window", "close"], 39, 4, args, obs.mean(0), obs.std(0) + 1e-3)
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
    """Episodes of 30 steps in a 40-step rollout with no success: every episode end is a time limit, and its
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
    assert set(seen["rew"].unique().tolist()) <= {0.0, 1.0}  # the sparse reward: 1 on success, else 0
    assert seen["next_val"][ends].abs().min() > 1.0


def test_stage_0_trains_the_base_and_heads_and_keeps_lora_at_zero(in_tmp, monkeypatch):
    """Stage 0 is the lite backbone's pre-training: base weights and heads learn, LoRA's B stays 0 (identity), so
    the later SFT stages adapt a trained base through LoRA."""
    seen, sft_stage = {}, V.sft_stage

    def spy(model, data, params, steps, *a):
        ids = {id(p) for p in params}
        seen[a[-1]] = [ids >= {id(p) for p in model.backbone_params(lora=False)},
                       ids >= {id(p) for p in model.head_params()},
                       not ids & {id(p) for p in model.backbone_params(lora=True)}]
        return sft_stage(model, data, params, steps, *a)

    monkeypatch.setattr(V, "sft_stage", spy)
    monkeypatch.setattr(V, "success_rate", lambda model, task, episodes, args: 0.5)  # no 500-step evaluations
    threads = torch.get_num_threads()
    monkeypatch.setattr(sys, "argv", ["ire_vla_lite.py", "--expert-tasks", "reach-v3", "--rl-tasks",
                                      "window-close-v3", "--heldout-tasks", "door-close-v3", "--num-iterations", "0",
                                      "--sft0-steps", "20", "--eval-episodes", "1", "--d-model", "32", "--n-layers",
                                      "1", "--batch-size", "64"])
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


def test_the_docstring_map_names_what_the_file_defines():
    names = [n.strip().removesuffix("()") for line in V.__doc__.splitlines() if "->" in line
             for n in line.rsplit("->", 1)[1].split(",")]
    assert len(names) >= 10 and all(callable(getattr(V, n, None)) for n in names), names


def test_sft_loss_is_the_squared_error_of_the_action_head_s_mean():
    torch.manual_seed(0)
    model, _, _ = small_model()
    obs, act = torch.randn(5, 39), torch.rand(5, 4) * 2 - 1
    words = V.pad_words(model, ["reach-v3"] * 5)
    mean = model.action_head(model.backbone(obs, words))
    want = sum(((mean[i] - act[i]) ** 2).sum() for i in range(5)) / 5  # E ||pi(o, l) - a||^2
    assert torch.allclose(V.sft_loss(model, obs, words, act), want)


def test_ppo_loss_clips_the_ratio():
    """Advantages +1, -1 (normalised: +-1/sqrt(2)), ratios 1.5 and 0.5, clip 0.2: both ratios are clipped, to 1.2
    (positive advantage) and 0.8 (negative), so L = mean(-A clip(r)); inside [0.8, 1.2] it is mean(-A r)."""
    a, old = 2 ** -0.5, torch.zeros(2)
    loss = V.ppo_loss(torch.log(torch.tensor([1.5, 0.5])), old, torch.tensor([1.0, -1.0]), 0.2)
    assert torch.allclose(loss, torch.tensor((-a * 1.2 + a * 0.8) / 2), atol=1e-6)
    loss = V.ppo_loss(torch.log(torch.tensor([1.1, 0.9])), old, torch.tensor([1.0, -1.0]), 0.2)
    assert torch.allclose(loss, torch.tensor((-a * 1.1 + a * 0.9) / 2), atol=1e-6)


def test_success_rate_acts_with_the_task_s_instruction_and_the_mean_action(monkeypatch):
    """Evaluation is deterministic: the action head's mean for the task's own instruction, clipped to [-1, 1]."""
    torch.manual_seed(0)
    model, args, d = small_model(seed=7)
    seen = {}

    def fake_evaluate(act_fn, env_id, episodes, seed):
        seen.update(act_fn=act_fn, env_id=env_id, episodes=episodes, seed=seed)
        return 0.0, 0.25

    monkeypatch.setattr(V, "evaluate", fake_evaluate)
    assert V.success_rate(model, "window-close-v3", 3, args) == 0.25
    assert (seen["env_id"], seen["episodes"], seen["seed"]) == ("metaworld/window-close-v3", 3, 10_007)
    obs = d["observations"][:1]
    with torch.no_grad():
        model.action_head[2].bias.copy_(torch.tensor([3.0, -3.0, 0.0, 0.0]))  # two dimensions leave [-1, 1]
        mean = model.action_head(model.backbone(torch.as_tensor(obs), V.pad_words(model, ["window-close-v3"])))[0]
    a = seen["act_fn"](obs[0])
    assert (mean.abs() > 1).any() and (mean.abs() < 1).any()
    assert np.array_equal(a, mean.clamp(-1, 1).numpy()) and np.array_equal(a, seen["act_fn"](obs[0]))


# ---- main() on a tiny budget: one stage 0 and one (RL, SFT) iteration ----
TINY = ["--expert-tasks", "reach-v3", "--rl-tasks", "window-close-v3", "--heldout-tasks", "door-close-v3",
        "--num-iterations", "1", "--sft0-steps", "20", "--sft-steps", "20", "--rl-steps", "20", "--num-steps", "20",
        "--num-envs-per-task", "1", "--max-episode-steps", "10", "--update-epochs", "1", "--num-minibatches", "1",
        "--eval-episodes", "1", "--d-model", "32", "--n-layers", "1", "--batch-size", "64"]


def spy_on_stages(monkeypatch, mark_success=False):
    """Wraps the stages main() calls; returns {stage tag: the parameter groups it changed} and the data they saw.
    mark_success: the RL stage's trajectories are marked successful, alternately, so D_RL is never empty."""
    seen, rl_stage, sft_stage = {"changed": {}}, V.rl_stage, V.sft_stage

    def groups(model):
        return {"base": model.backbone_params(lora=False), "lora": model.backbone_params(lora=True),
                "heads": model.head_params()}

    def wrap(stage):
        def spy(model, *a, **kw):
            before = {g: snapshot(ps) for g, ps in groups(model).items()}
            out = stage(model, *a, **kw)
            seen["changed"][a[-1]] = {g for g, ps in groups(model).items() if changed(before[g], ps)}
            if stage is rl_stage and mark_success:
                for j, t in enumerate(out):
                    t["success"] = j % 2 == 0
                seen["trajs"] = out
            if stage is sft_stage:
                seen[a[-1]] = a[0]  # the data
            return out
        return spy

    monkeypatch.setattr(V, "rl_stage", wrap(rl_stage))
    monkeypatch.setattr(V, "sft_stage", wrap(sft_stage))
    return seen


def run_main(monkeypatch, *extra):
    """main() with TINY budgets; success_rate() answers 0.5 without 500-step episodes (tested on its own)."""
    monkeypatch.setattr(V, "success_rate", lambda model, task, episodes, args: 0.5)
    monkeypatch.setattr(sys, "argv", ["ire_vla_lite.py", *TINY, *extra])
    assert V.main() == 0


def test_main_runs_one_full_iteration_and_d_rl_joins_the_sft_data(in_tmp, monkeypatch):
    """ire-vla: stage 0 trains base + heads (LoRA stays zero), the RL stage only the heads (backbone frozen), the
    SFT stage LoRA + heads (not the base), on D_e united with exactly the successful RL trajectories."""
    seen = spy_on_stages(monkeypatch, mark_success=True)
    run_main(monkeypatch)
    assert seen["changed"] == {"sft0": {"base", "heads"}, "rl1": {"heads"}, "sft1": {"lora", "heads"}}
    wins = [t for t in seen["trajs"] if t["success"]]
    assert len(seen["trajs"]) >= 2 and 0 < len(wins) < len(seen["trajs"])
    d_e, data = seen["sft0"], seen["sft1"]
    assert torch.equal(data["obs"], torch.cat([d_e["obs"], *(torch.as_tensor(t["obs"]) for t in wins)]))
    assert torch.equal(data["act"], torch.cat([d_e["act"], *(torch.as_tensor(t["act"]) for t in wins)]))
    assert (data["words"][len(d_e["act"]):] == torch.tensor([2, 0, 4, 4])).all()  # vocab close, reach, window; 4: pad
    run = glob.glob(str(in_tmp / "runs" / "*"))[0]
    rows = [r.split(",") for r in open(os.path.join(run, "metrics.csv")).read().splitlines()[1:]]
    assert ["1", "charts/d_rl_trajectories", f"{len(wins)}.0"] in rows
    assert {(s, k) for s, k, _ in rows if k.startswith("eval/")} == {
        (str(i), f"eval/success_{split}") for i in range(3) for split in ("expert", "rl", "heldout")}
    saved = torch.load(os.path.join(run, "model.pt"), weights_only=False)
    assert [stage for stage, _ in saved["results"]] == [0, 1, 2] and saved["interrupted"] is False


def test_main_freeze_never_unfreezes_the_backbone(in_tmp, monkeypatch):
    seen = spy_on_stages(monkeypatch)
    run_main(monkeypatch, "--mode", "freeze")
    assert seen["changed"] == {"sft0": {"base", "heads"}, "rl1": {"heads"}, "sft1": {"heads"}}


def test_main_plain_rl_trains_the_whole_model_and_has_no_sft_stage(in_tmp, monkeypatch):
    seen = spy_on_stages(monkeypatch)
    run_main(monkeypatch, "--mode", "plain-rl")
    assert seen["changed"] == {"sft0": {"base", "heads"}, "rl1": {"base", "lora", "heads"}}

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


def test_lora_starts_as_identity():
    torch.manual_seed(0)
    layer = V.LoRALinear(8, 5, 4)
    x = torch.randn(3, 8)
    assert torch.equal(layer(x), layer.base(x))


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

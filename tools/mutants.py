"""Mutation check of the fidelity tables: each mutant breaks one row (or one equation of a docstring's map) in a copy
of the repository, and the tests it names must fail there.

    python tools/mutants.py               # every mutant: killed / survived, exit 1 on a survivor or a stale mutant
    python tools/mutants.py --list        # the table: file, name, the row it breaks, its tests
    python tools/mutants.py rlpd rlif     # only the mutants of files whose name contains one of these words
    python tools/mutants.py --jobs 1      # one at a time (default: 2 copies of the repository side by side)

A mutant replaces `old` (which must occur exactly once in its file, else the table is stale and the run fails) by
`new`, runs only its `tests` (pytest node ids), and is killed when they fail. Each section below belongs to one
method file; add a mutant whenever a fidelity row or an equation gains a test.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Mutant(NamedTuple):
    file: str  # the method file it changes
    name: str  # short, unique within the file
    row: str  # the fidelity row or equation it breaks
    old: str  # exact text, found exactly once in the file
    new: str  # its replacement
    tests: tuple  # pytest node ids that must fail


M = Mutant

# ---- rlpd.py ----
RLPD = [
]


# ---- rlif.py ----
RLIF = [
]


# ---- conrft.py ----
CONRFT = [
]


# ---- asap_delta.py ----
ASAP = [
]


# ---- ire_vla_lite.py ----
T_IRE = "tests/test_ire_vla.py::"
IRE_VLA = [
    M("ire_vla_lite.py", "rollout-obs-view", "D_RL stores the observation each action was taken in",
      'cur[i]["obs"].append(obs[i].copy())', 'cur[i]["obs"].append(obs[i])',
      (T_IRE + "test_rollout_stores_each_step_s_own_observation",)),
    M("ire_vla_lite.py", "ppo-batch-obs-view", "PPO's batch holds the observation each action was taken in",
      "o = torch.tensor(obs)", "o = torch.as_tensor(obs)",
      (T_IRE + "test_rollout_stores_each_step_s_own_observation",)),
    M("ire_vla_lite.py", "lora-scale-alpha", "LoRA: W x + (alpha / r) B A x (map: VLA, LoRALinear)",
      "self.scale = alpha / rank", "self.scale = alpha",
      (T_IRE + "test_lora_starts_as_identity_and_scales_by_alpha_over_r",)),
    M("ire_vla_lite.py", "sft-loss-l1", "SFT: min E ||pi(o, l) - a||^2 (map: sft_loss())",
      "- act) ** 2).sum(-1).mean()", "- act).abs()).sum(-1).mean()",
      (T_IRE + "test_sft_loss_is_the_squared_error_of_the_action_head_s_mean",)),
    M("ire_vla_lite.py", "ppo-unclipped", "RL algorithm: PPO's clipped surrogate (map: ppo_loss())",
      "-adv * ratio.clamp(1 - clip_coef, 1 + clip_coef)", "-adv * ratio",
      (T_IRE + "test_ppo_loss_clips_the_ratio",)),
    M("ire_vla_lite.py", "logp-of-clipped-action", "RL algorithm: log-prob of the raw sample (map: sample_action())",
      "return a, dist.log_prob(a).sum(-1), a.clamp(-1, 1)",
      "return a, dist.log_prob(a.clamp(-1, 1)).sum(-1), a.clamp(-1, 1)",
      (T_IRE + "test_ppo_stores_the_raw_sample_and_its_log_prob_and_d_rl_the_clipped_action",)),
    M("ire_vla_lite.py", "time-limit-not-bootstrapped", "RL algorithm: time limits bootstrapped (map: gae())",
      ' + b["trunc_val"] * (1 - b["term"])', "",
      (T_IRE + "test_rl_stage_bootstraps_truncated_episodes",)),
    M("ire_vla_lite.py", "dense-reward", "RL stages: sparse reward 1 on success (the env's dense reward instead)",
      'float(info["success"]), float(term or trunc)', "float(_), float(term or trunc)",
      (T_IRE + "test_rl_stage_bootstraps_truncated_episodes",)),
    M("ire_vla_lite.py", "d-rl-keeps-failures", "D_RL receives only successful trajectories (map: successful())",
      "wins = successful(trajs)", "wins = trajs",
      (T_IRE + "test_main_runs_one_full_iteration_and_d_rl_joins_the_sft_data",)),
    M("ire_vla_lite.py", "sft-without-d-rl", "SFT stages: on D_e united with D_RL (D_e alone instead)",
      "torch.cat([D_e[k]] + D_rl[k])", "torch.cat([D_e[k]])",
      (T_IRE + "test_main_runs_one_full_iteration_and_d_rl_joins_the_sft_data",)),
    M("ire_vla_lite.py", "stage0-trains-lora", "stage 0: base weights + heads, LoRA kept at zero",
      "model.backbone_params(lora=False) + model.head_params(), args.sft0_steps",
      "list(model.parameters()), args.sft0_steps",
      (T_IRE + "test_stage_0_trains_the_base_and_heads_and_keeps_lora_at_zero",)),
    M("ire_vla_lite.py", "rl-unfreezes-backbone", "RL stages: backbone frozen, only the heads train",
      'rl_whole_model = args.mode == "plain-rl"', "rl_whole_model = True",
      (T_IRE + "test_main_runs_one_full_iteration_and_d_rl_joins_the_sft_data",)),
    M("ire_vla_lite.py", "sft-trains-base", "SFT stages: LoRA + heads, not the base weights",
      "model.backbone_params(lora=True) if sft_lora", "model.backbone_params(lora=False) if sft_lora",
      (T_IRE + "test_main_runs_one_full_iteration_and_d_rl_joins_the_sft_data",)),
    M("ire_vla_lite.py", "freeze-unfreezes", "--mode freeze: even stages train only the heads",
      'sft_lora = args.mode != "freeze"', "sft_lora = True",
      (T_IRE + "test_main_freeze_never_unfreezes_the_backbone",)),
    M("ire_vla_lite.py", "plain-rl-runs-sft", "--mode plain-rl: no SFT stage after stage 0",
      'sft_stages = args.mode != "plain-rl"', "sft_stages = True",
      (T_IRE + "test_main_plain_rl_trains_the_whole_model_and_has_no_sft_stage",)),
]


# ---- grape_tpo.py ----
GRAPE = [
]


# ---- inril_pcgrad.py and inril_residual.py ----
INRIL = [
]


MUTANTS = RLPD + RLIF + CONRFT + ASAP + IRE_VLA + GRAPE + INRIL


def copy_repo(dest):
    """The method files, tests and pytest.ini copied; data/ linked (read only)."""
    for name in os.listdir(ROOT):
        src = os.path.join(ROOT, name)
        if name.endswith(".py") or name == "pytest.ini":
            shutil.copy(src, dest)
    shutil.copytree(os.path.join(ROOT, "tests"), os.path.join(dest, "tests"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    os.symlink(os.path.join(ROOT, "data"), os.path.join(dest, "data"))


def run_mutant(m, dest):
    """'killed', 'SURVIVED', or 'STALE: ...'; the mutated file is restored before returning."""
    path = os.path.join(dest, m.file)
    original = open(path).read()
    if (n := original.count(m.old)) != 1:
        return f"STALE: the text is found {n} times in {m.file}", 0.0
    start = time.time()
    try:
        open(path, "w").write(original.replace(m.old, m.new))
        try:
            r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *m.tests],
                               cwd=dest, capture_output=True, text=True, timeout=300)
            code = r.returncode
        except subprocess.TimeoutExpired:
            code = 1  # a test that hangs under the mutant fails
    finally:
        open(path, "w").write(original)
    if code in (4, 5):  # usage error or no test collected: a test id in the table is wrong
        return f"STALE: pytest exit {code} (is every test id right?)", time.time() - start
    return ("killed" if code != 0 else "SURVIVED"), time.time() - start


def main(argv):
    jobs = int(argv[argv.index("--jobs") + 1]) if "--jobs" in argv else 2
    words = [a for i, a in enumerate(argv) if not a.startswith("--") and (i == 0 or argv[i - 1] != "--jobs")]
    todo = [m for m in MUTANTS if not words or any(w in m.file for w in words)]
    names = [(m.file, m.name) for m in MUTANTS]
    if len(set(names)) != len(names):
        raise SystemExit("tools/mutants.py: two mutants of one file share a name.")
    if "--list" in argv:
        for m in todo:
            print(f"{m.file:18s} {m.name:28s} {m.row}\n{'':47s} tests: {', '.join(m.tests)}")
        print(f"{len(todo)} mutants")
        return 0
    start, results = time.time(), [None] * len(todo)
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [os.path.join(tmp, f"copy{j}") for j in range(jobs)]
        for d in dirs:
            os.makedirs(d)
            copy_repo(d)
        free = list(dirs)

        def work(i):
            d = free.pop()
            try:
                results[i] = run_mutant(todo[i], d)
            finally:
                free.append(d)
            print(f"{results[i][0]:8s} {todo[i].file}: {todo[i].name} ({results[i][1]:.1f} s)", flush=True)

        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(work, range(len(todo))))
    bad = [(m, r) for m, (r, _) in zip(todo, results) if r != "killed"]
    print(f"{len(todo) - len(bad)} of {len(todo)} mutants killed in {time.time() - start:.0f} s")
    for m, r in bad:
        print(f"  {r}: {m.file} {m.name} ({m.row})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

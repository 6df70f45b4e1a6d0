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
IRE_VLA = [
    M("ire_vla_lite.py", "rollout-obs-view", "D_RL stores the observation each action was taken in",
      'cur[i]["obs"].append(obs[i].copy())', 'cur[i]["obs"].append(obs[i])',
      ("tests/test_ire_vla.py::test_rollout_stores_each_step_s_own_observation",)),
    M("ire_vla_lite.py", "ppo-batch-obs-view", "PPO's batch holds the observation each action was taken in",
      "o = torch.tensor(obs)", "o = torch.as_tensor(obs)",
      ("tests/test_ire_vla.py::test_rollout_stores_each_step_s_own_observation",)),
]


# ---- grape_tpo.py ----
GRAPE = [
    M("grape_tpo.py", "sft-mse", "SFT: the Gaussian NLL E[-log pi(a | o, q)] (sft_loss)",
      "return -model.dist(obs, words).log_prob(act).sum(-1).mean()",
      "return ((model.dist(obs, words).mean - act) ** 2).sum(-1).mean()",
      ("tests/test_grape.py::test_sft_loss_is_the_gaussian_nll",)),
    M("grape_tpo.py", "sample-the-mean", "sampling: the Gaussian with its learned std (do_sample)",
      "a = dist.sample()", "a = dist.mean",
      ("tests/test_grape.py::test_sampling_keeps_the_raw_action_and_its_log_prob",)),
    M("grape_tpo.py", "logp-of-clipped-action", "raw-sample log-probs (sample_trajectories)",
      "logp = dist.log_prob(a).sum(-1)", "logp = dist.log_prob(a.clamp(-1, 1)).sum(-1)",
      ("tests/test_grape.py::test_sampling_keeps_the_raw_action_and_its_log_prob",)),
    M("grape_tpo.py", "groups-without-a-shared-start", "pairs: the M rollouts of a group share one initial state",
      "[st for st in starts for _ in range(M)]", "[st for _ in range(M) for st in starts]",
      ("tests/test_grape.py::test_groups_share_a_start_and_pairs_stay_within_them",)),
    M("grape_tpo.py", "pair-top-with-second-worst", "pairs: the i-th best with the i-th worst (make_pairs)",
      "w, lo = order[i], order[-1 - i]", "w, lo = order[i], order[-2 - i]",
      ("tests/test_grape.py::test_pairs_top_with_bottom_skip_ties_and_never_self",)),
    M("grape_tpo.py", "r-self-mean", "R_self: the official sum_t log max(p_t, 0.05), not a per-step mean",
      "return float(np.sum(np.clip(logp, np.log(0.05), 0.0)))",
      "return float(np.mean(np.clip(logp, np.log(0.05), 0.0)))",
      ("tests/test_grape.py::test_r_self_is_the_official_clipped_sum",)),
    M("grape_tpo.py", "r-ext-no-threshold", "R_ext = prod_i exp(-beta_ext max(0, C_i - thr)) (external_reward)",
      "np.maximum(0.0, np.asarray(costs) - threshold)", "(np.asarray(costs) - threshold)",
      ("tests/test_grape.py::test_reward_aggregation_and_stage_costs",)),
    M("grape_tpo.py", "r-ext-no-progress", "R_ext ranks progress first: stages done, then cost (NOT official row)",
      "float((done + np.exp(", "float((0 + np.exp(",
      ("tests/test_grape.py::test_stage_progress_ranks_before_cost",)),
    M("grape_tpo.py", "gcpg-success-weight", "Eq. 9 with the I_success weight lambda_3 (gcpg_reward)",
      "lambda_success * float(success)", "float(success)",
      ("tests/test_grape.py::test_reward_aggregation_and_stage_costs",)),
    M("grape_tpo.py", "margin-mean", "log pi(zeta) = sum_t log pi(a_t | o_t, q) (preference_margins)",
      "(logp_l[:T] - ref_l[:T])).sum()[None]", "(logp_l[:T] - ref_l[:T])).mean()[None]",
      ("tests/test_grape.py::test_margins_truncate_to_the_shorter_and_sum_steps",)),
    M("grape_tpo.py", "tpo-loss-without-beta", "TPO loss: -log sigmoid(beta * margin) (tpo_loss, Eq. 7)",
      "return -F.logsigmoid(beta * margins).mean()", "return -F.logsigmoid(margins).mean()",
      ("tests/test_grape.py::test_tpo_loss_shape_sign_and_preferring_the_winner_lowers_it",)),
    M("grape_tpo.py", "beta-default", "TPO loss: beta 0.1 (finetune.py)",
      "beta: float = 0.1", "beta: float = 1.0", (
      "tests/test_grape.py::test_main_tpo_trains_lora_and_head_vs_frozen_ref",)),
    M("grape_tpo.py", "tpo-plus-sft-term", "TPO loss: no SFT term (finetune.py)",
      "loss = tpo_loss(margin, beta)", "loss = tpo_loss(margin, beta) - step_log_probs(model, trajs[w], steps).mean()",
      ("tests/test_grape.py::test_windows_of_all_pairs_flattened_shuffled_one_step_each",)),
    M("grape_tpo.py", "ref-stays-the-sft-policy", "pi_ref: the policy at the start of each iteration (finetune.py)",
      "ref = copy.deepcopy(model).requires_grad_(False)",
      "ref = ref if it > 1 else copy.deepcopy(model).requires_grad_(False)", (
      "tests/test_grape.py::test_main_tpo_trains_lora_and_head_vs_frozen_ref",)),
    M("grape_tpo.py", "one-optimiser-for-all-iterations", "optimiser: a fresh AdamW per iteration (finetune.py run)",
      "tpo_opt = torch.optim.AdamW(", "tpo_opt = tpo_opt if it > 1 else torch.optim.AdamW(", (
      "tests/test_grape.py::test_main_tpo_trains_lora_and_head_vs_frozen_ref",)),
    M("grape_tpo.py", "tpo-trains-everything", "TPO trains LoRA + head only (TPO-LoRA): main()'s optimiser",
      "torch.optim.AdamW(model.tpo_param_groups(args.tpo_weight_decay), lr=args.tpo_lr)",
      "torch.optim.AdamW(model.parameters(), lr=args.tpo_lr)", (
      "tests/test_grape.py::test_main_tpo_trains_lora_and_head_vs_frozen_ref",)),
    M("grape_tpo.py", "log-std-decayed", "optimiser: weight decay 0.01 on adapters and head, none on log_std",
      '{"params": [self.log_std], "weight_decay": 0.0}', '{"params": [self.log_std], "weight_decay": weight_decay}',
      (
      "tests/test_grape.py::test_main_tpo_trains_lora_and_head_vs_frozen_ref",)),
    M("grape_tpo.py", "one-window-per-pair", "optimiser: one step per 8-step window of every pair (finetune.py)",
      "n = T if window <= 0 else min(window, T)", "n = T",
      ("tests/test_grape.py::test_windows_of_all_pairs_flattened_shuffled_one_step_each",)),
    M("grape_tpo.py", "windows-not-shuffled", "optimiser: all pairs' windows flattened and shuffled (flatshape)",
      "return [units[i] for i in rng.permutation(len(units))]", "return units",
      ("tests/test_grape.py::test_windows_of_all_pairs_flattened_shuffled_one_step_each",)),
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

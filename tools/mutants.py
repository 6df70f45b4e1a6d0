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
RLIF_MAIN = "tests/test_rlif.py::test_main_stores_what_the_official_loop_stores"
RLIF_STEP = "tests/test_rlif.py::test_step_decision_one_step_at_a_time"
RLIF = [
    M("rlif.py", "takeover-last-step-dropped", "reward labels: a takeover's last expert step is stored (r = 0)",
      "store = None if pending is None or label is None else",
      "store = None if pending is None or label is None or prev_expert else", (RLIF_MAIN, RLIF_STEP)),
    M("rlif.py", "minus-one-label-lost", "reward labels: -1 on the learner step before a takeover",
      "(-1.0 if not prev_expert else None)", "(0.0 if not prev_expert else None)", (RLIF_MAIN, RLIF_STEP)),
    M("rlif.py", "no-hand-back", "takeover: after 4 expert steps the learner acts one step unchecked",
      "elif prev_expert and hand_back:", "elif False:", (RLIF_MAIN, RLIF_STEP)),
    M("rlif.py", "value-rule-without-alpha", "value rule: Q_ref(s, a_l) < alpha Q_ref(s, a_ref) (should_intervene)",
      "q_learner < alpha * q_ref", "q_learner < q_ref",
      ("tests/test_rlif.py::test_value_rule_probabilities",)),
    M("rlif.py", "a-ref-from-intervening-expert", "value rule: a_ref is the reference (expert) policy's action",
      "np.stack([a_l, ref_act(obs)])", "np.stack([a_l, expert_act(obs)])",
      ("tests/test_rlif.py::test_value_model_scores_the_reference_action_with_the_reference_critic",)),
    M("rlif.py", "qref-fitted-on-intervening-expert", "reference agent: Q_ref from the reference policy (fit_qref)",
      "fit_qref(ref_act, make_env(", "fit_qref(expert_act, make_env(",
      ("tests/test_rlif.py::test_value_model_scores_the_reference_action_with_the_reference_critic",)),
    M("rlif.py", "random-model-hands-back", "random model: a coin every step, no takeover length, no hand-back",
      'hand_back = args.intervention == "value"', "hand_back = True",
      ("tests/test_rlif.py::test_random_model_is_a_coin_at_every_step",)),
    M("rlif.py", "random-coin-flipped", "random model: the expert acts with probability p (random_intervention)",
      "return u < prob", "return u < 1.0 - prob",
      ("tests/test_rlif.py::test_random_model_is_a_coin_at_every_step",
       "tests/test_rlif.py::test_value_rule_probabilities")),
    M("rlif.py", "episode-end-keeps-pending", "main(): at an episode end the pending step is stored once, then cleared",
      "pending, prev_expert, takeover_left = None, False, 0", "prev_expert, takeover_left = False, 0", (RLIF_MAIN,)),
    M("rlif.py", "episode-end-drops-last-transition", "terminations: main() stores the last transition (--terminal)",
      "last_transition(pending, args.gamma, args.terminal)", 'last_transition(pending, args.gamma, "drop")', (RLIF_MAIN,)),
    M("rlif.py", "qref-not-monte-carlo", "Q_ref: regression on discounted returns to go (fit_qref)",
      "ret[t] = rews[t] + gamma * ret[t + 1]", "ret[t] = rews[t]",
      ("tests/test_rlif.py::test_fit_qref_regresses_discounted_returns_to_go",)),
    M("rlif.py", "critic-update-ignores-masks", "RLPD's SAC step: y bootstraps through mask 1 only (critic_update)",
      'y = td_target(b["rewards"], b["masks"],', 'y = td_target(b["rewards"], torch.ones_like(b["masks"]),',
      ("tests/test_rlif.py::test_critic_update_bootstraps_only_through_mask_1",
       "tests/test_rlif.py::test_update_steps_are_rlpds_word_for_word")),
    M("rlif.py", "bc-loss-sampled-action", "DAgger family: BC on the deterministic action (bc_loss)",
      "actor(obs, deterministic=True)[0] - act", "actor(obs, deterministic=False)[0] - act",
      ("tests/test_rlif.py::test_bc_loss_is_the_squared_error_of_the_deterministic_action",)),
    M("rlif.py", "ensemble-of-2", "networks: 3 x 256, E = 10, Z = 2, LayerNorm, no entropy backup",
      "num_qs: int = 10", "num_qs: int = 2", ("tests/test_rlif.py::test_defaults_are_the_official_config",)),
    M("rlif.py", "batch-128", "start_training, batch: 0, 256",
      "batch_size: int = 256", "batch_size: int = 128", ("tests/test_rlif.py::test_defaults_are_the_official_config",)),
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

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
CONRFT_TEST = "tests/test_conrft.py::"
CONRFT = [
    M("conrft.py", "karras-ramp", "Karras levels k_m (consistency policy equation; Karras row)",
      "ramp = torch.linspace(0, 1, num_scales)", "ramp = torch.linspace(0, 1, num_scales) ** 2",
      (CONRFT_TEST + "test_karras_levels_follow_the_formula",)),
    M("conrft.py", "time-input-log-k", "time input: sinusoidal features of 1000 * 0.25 * log(k) (time input row)",
      "self.t_net(1000 * 0.25 * torch.log(sigma + 1e-44))", "self.t_net(torch.log(sigma + 1e-44))",
      (CONRFT_TEST + "test_network_inputs_are_c_in_scaled_action_and_250_log_k",)),
    M("conrft.py", "consistency-weight", "L_c's Karras weight w(k) = 1/k^2 + 1/sd^2 (consistency term; loss row)",
      "w = 1 / k**2 + 1 / sigma_data**2", "w = 1 / k**2",
      (CONRFT_TEST + "test_consistency_loss_levels_and_karras_weight",)),
    M("conrft.py", "consistency-levels", "L_c at a random level of the first M - 1 (consistency loss row)",
      "idx = torch.randint(0, len(sigmas) - 1, (obs.shape[0],))",
      "idx = torch.randint(0, len(sigmas), (obs.shape[0],))",
      (CONRFT_TEST + "test_consistency_loss_levels_and_karras_weight",)),
    M("conrft.py", "td-min-target", "TD target: min of the 2 target critics (TD loss; critic row)",
      'q_next = target_critic(b["next_observations"], next_a).min(0).values.squeeze(-1)',
      'q_next = target_critic(b["next_observations"], next_a).mean(0).squeeze(-1)',
      (CONRFT_TEST + "test_td_loss_is_the_official_target",)),
    M("conrft.py", "td-noisy-next-action", "TD target: one noisy next action a' ~ pi (TD loss)",
      'next_a = policy.sample(b["next_observations"], sigmas, steps)',
      'next_a = policy.sample(b["next_observations"], sigmas, steps, noise=False)',
      (CONRFT_TEST + "test_td_loss_is_the_official_target",)),
    M("conrft.py", "calql-floor", "Cal-QL: each sampled Q floored at the MC return V^mu (Eq. 3; Stage I critic row)",
      'q_ood = calibrate(critic(b["observations"], torch.cat([rand, cur, nxt], 1)), b["mc_returns"].view(1, B, 1))',
      'q_ood = critic(b["observations"], torch.cat([rand, cur, nxt], 1))',
      (CONRFT_TEST + "test_cal_ql_regulariser_floors_every_sampled_q_at_the_mc_return",)),
    M("conrft.py", "policy-loss-eta", "L_pi = -eta E[Q] + beta L_c (Eq. 4)",
      "return -eta * q.mean() + beta * l_c, l_c, q.mean()", "return -q.mean() + beta * l_c, l_c, q.mean()",
      (CONRFT_TEST + "test_policy_loss_weights_eta_and_beta",)),
    M("conrft.py", "stage-two-beta", "Stage II weights eta 1, beta 0.1, constant (Stage I / II weights row)",
      "beta = args.beta_offline if args.beta_fade else args.beta", "beta = args.beta_offline",
      (CONRFT_TEST + "test_stage_weights_eta_beta",)),
    M("conrft.py", "stage-switch", "Stage I critic Cal-QL, Stage II plain TD (Stage II critic row)",
      "stats = critic_update(b, cql=not online or args.online_cql)", "stats = critic_update(b, cql=args.online_cql)",
      (CONRFT_TEST + "test_learner_step_stage_one_cal_ql_then_stage_two_plain_td",)),
    M("conrft.py", "cta-ratio", "cta_ratio critic updates per actor update (learner step; critic updates row)",
      "for _ in range(args.cta_ratio):", "for _ in range(1):",
      (CONRFT_TEST + "test_learner_step_stage_one_cal_ql_then_stage_two_plain_td",)),
    M("conrft.py", "stale-stage-two-optimizers", "fresh Adam for Stage II (Stage I -> II row)",
      "not its optimizer states\n    actor_opt = torch.optim.Adam(policy.parameters(), lr=args.lr)\n"
      "    critic_opt = torch.optim.Adam(critic.parameters(), lr=args.lr)\n",
      "not its optimizer states\n", (CONRFT_TEST + "test_stage_two_optimizers_are_fresh",)),
    M("conrft.py", "mixed-batch-quarter", "Stage II batch half demo, half online (batch row; Stage II)",
      "half = batch_size // 2", "half = batch_size // 4",
      (CONRFT_TEST + "test_mixed_batch_is_half_demo_half_online",)),
    M("conrft.py", "interventions-online-only", "interventions go to both buffers (Stage II; interventions row)",
      "    if by_expert.any():", "    if False:",
      (CONRFT_TEST + "test_store_episode_sends_interventions_to_both_buffers",)),
    M("conrft.py", "truncation-mask-0", "truncations bootstrap (mask 1), terminations do not (episode end row)",
      "episode.append((obs, action, r, next_obs, 1.0 - float(term), by_expert))",
      "episode.append((obs, action, r, next_obs, 1.0 - float(term or trunc), by_expert))",
      (CONRFT_TEST + "test_episode_ends_masks_and_takeover_reset",)),
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

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
ASAP_T = "tests/test_asap.py::"
ASAP_MAIN = ASAP_T + "test_main_fine_tunes_in_the_sim_its_method_builds"
ASAP = [
    M("asap_delta.py", "finetune-in-plain-sim", "fine-tuning: the policy trains in the sim with the frozen delta",
      'sim_id = register_env("aligned", args.env_id, lambda env: AlignedSim(env, delta_model))',
      "sim_id = args.env_id", (ASAP_MAIN + "[asap]",)),
    M("asap_delta.py", "aligned-sim-without-delta", "Stage 4: each action a becomes a + pi_delta(s, a) in sim",
      "return self.env.step(np.clip(a + np.clip(self.delta_model.act(np.concatenate([s, a])), -1, 1), -1, 1))",
      "return self.env.step(a)",
      (ASAP_T + "test_aligned_sim_shifts_the_next_state_as_the_same_action_shift_in_the_plain_sim",)),
    M("asap_delta.py", "finetune-from-scratch", "fine-tuning: from the shipped expert's weights",
      'actor = GaussianMLP(obs_dim, act_dim, args.finetune_std, p["obs_mean"], p["obs_var"], init=p)',
      'actor = GaussianMLP(obs_dim, act_dim, args.finetune_std, p["obs_mean"], p["obs_var"])',
      (ASAP_MAIN + "[finetune-sim]",)),
    M("asap_delta.py", "finetune-critic-unnormalised", "PPO's critic sees its actor's normalised inputs (fine-tuning)",
      'critic = critic_net(obs_dim, p["obs_mean"], p["obs_var"])', "critic = critic_net(obs_dim)",
      (ASAP_MAIN + "[finetune-sim]",)),
    M("asap_delta.py", "delta-critic-unnormalised", "delta critic: the actor's observation, normalised",
      "critic_net(obs_dim + act_dim, mean, var)", "critic_net(obs_dim + act_dim)", (ASAP_MAIN + "[asap]",)),
    M("asap_delta.py", "state-error-tracks-root-x", "r = -||s^sim - s^real||_W^2 ...: W leaves out the root's x",
      "((qpos[..., 1:] - qpos_ref[..., 1:]) ** 2)", "((qpos - qpos_ref) ** 2)",
      (ASAP_T + "test_tracking_reward_sign_and_shape",)),
    M("asap_delta.py", "track-reward-no-delta-penalty", "r = ... - lambda ||delta||^2",
      "return -err - lam * float(np.sum(np.square(delta)))", "return -err",
      (ASAP_T + "test_tracking_reward_sign_and_shape",)),
    M("asap_delta.py", "official-reward-body-sigma", "delta reward, official form: body position sigma 0.03",
      "kern(qpos[1:3], qpos_ref[1:3], 0.03)", "kern(qpos[1:3], qpos_ref[1:3], 0.1)",
      (ASAP_T + "test_official_reward_terms_and_kernel_widths",)),
    M("asap_delta.py", "delta-env-terminates-on-fall", "falls in the delta env never terminate, only truncate",
      'return self._obs(), r, False, bool(trunc), {"tracking_error": err}',
      'return self._obs(), r, not self.sim.is_healthy, bool(trunc), {"tracking_error": err}',
      (ASAP_T + "test_delta_env_never_terminates_on_a_fall",)),
    M("asap_delta.py", "delta-sees-last-real-action", "delta model inputs: sim obs + the real action applied next",
      'self.traj["act"][min(self.t, len(self.traj["act"]) - 1)]', 'self.traj["act"][max(self.t - 1, 0)]',
      (ASAP_T + "test_delta_env_never_terminates_on_a_fall",)),
    M("asap_delta.py", "delta-env-not-reset-to-real", "Stage 3: the sim reset to recorded real states",
      'self.sim.set_state(self.traj["qpos"][self.t], self.traj["qvel"][self.t])',
      "self.sim.set_state(self.sim.init_qpos, self.sim.init_qvel)",
      (ASAP_T + "test_reset_to_state_replays_a_real_transition_exactly_when_physics_match",)),
    M("asap_delta.py", "ppo-unclipped", "PPO: clipped surrogate, clip 0.2 (ppo_loss)",
      "-adv * ratio.clamp(1 - clip_coef, 1 + clip_coef)", "-adv * ratio", (ASAP_T + "test_ppo_loss_clips_the_ratio",)),
    M("asap_delta.py", "gae-through-episode-ends", "PPO: GAE, cut at episode ends (gae)",
      "last = td_error + gamma * lam * (1 - done[t]) * last", "last = td_error + gamma * lam * last",
      (ASAP_T + "test_gae_bootstraps_from_next_values_and_cuts_at_episode_ends",)),
    M("asap_delta.py", "sysid-finetunes-in-plain-sim", "SysID baseline: fine-tune in the sim with the fitted scales",
      'sim_id = register_env("sysid", args.env_id, lambda env: PhysicsGap(env, *scales))',
      'sim_id = register_env("sysid", args.env_id, lambda env: PhysicsGap(env))', (ASAP_MAIN + "[sysid]",)),
    M("asap_delta.py", "sysid-worst-scale", "SysID baseline: the scales with the least tracking error",
      "scales = trials[int(np.argmin(errs))]", "scales = trials[int(np.argmax(errs))]",
      (ASAP_T + "test_sysid_search_picks_the_scale_with_the_least_error",)),
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

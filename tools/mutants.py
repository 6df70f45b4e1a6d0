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
]


# ---- inril_pcgrad.py and inril_residual.py ----
_P, _R, _T = "inril_pcgrad.py", "inril_residual.py", "tests/test_inril.py::"
INRIL = [
    M(_P, "il-step-after-m-plus-1", "update rule (Sec. 4.1): one IL step after every m(t) RL steps",
      "if interleave and since_il >= m_t:", "if interleave and since_il > m_t:",
      (_T + "test_main_one_il_step_after_every_m_rl_steps[pcgrad]",)),
    M(_P, "project-step-flag-ignored", "projection of the applied Adam step: on, or off alone (--no-project-step)",
      "    if step_hit and project_step:", "    if step_hit:", (_T + "test_no_project_step_is_pcgrad_then_adam",)),
    M(_P, "project-step-not-passed", "projection of the applied Adam step: --no-project-step reaches rl_step()",
      "                              args.project_step)", "                              True)",
      (_T + "test_main_passes_project_step",)),
    M(_R, "il-step-after-m-plus-1", "base updates during RL (Sec. 4.1): one IL step after every m(t) RL steps",
      "if interleave and since_il >= m_t:", "if interleave and since_il > m_t:",
      (_T + "test_main_one_il_step_after_every_m_rl_steps[residual]",)),
    M(_P, "il-shares-rl-adam", "update rule: step sizes alpha_IL, alpha_RL in two Adam states",
      "il_opt = torch.optim.Adam(actor_params, lr=args.il_lr, eps=1e-5)", "il_opt = rl_opt",
      (_T + "test_main_il_and_rl_have_own_optimizers_and_networks[pcgrad]",)),
    M(_R, "rl-trains-the-base", "network separation: the base gets IL steps only, the residual RL steps only",
      "rl_opt = torch.optim.Adam(res_params,", "rl_opt = torch.optim.Adam(base_params,",
      (_T + "test_main_il_and_rl_have_own_optimizers_and_networks[residual]",)),
    M(_R, "executes-unscaled-residual", "network separation: the executed action is base(s) + scale * u",
      "envs.step((a_base + scale * u).cpu().numpy())", "envs.step((a_base + u).cpu().numpy())",
      (_T + "test_main_residual_executes_base_plus_scaled_u[residual]",)),
    M(_P, "pcgrad-keeps-conflict", "surgery (1): PCGrad removes g_RL's component along g_IL when they conflict",
      "    return g - dot / (g_ref.norm() ** 2 + 1e-12) * g_ref, True", "    return g, True",
      (_T + "test_projection_orthogonal_when_conflicting",)),
    M(_P, "adam-step-not-projected", "surgery (3): the applied Adam step is projected off g_IL too",
      "    descent, step_hit = project_conflicting(descent, g_il)  # (3)", "    step_hit = False  # (3)",
      (_T + "test_projected_rl_step_never_raises_il_loss_to_first_order",)),
    M(_P, "rho-not-cosine", "rho: the cosine of the two loss gradients",
      "/ (g_il.norm() * g_rl.norm() + 1e-12))", "/ 1.0)",
      (_T + "test_rho_cosine_and_dynamic_m_direction",)),
    M(_R, "rho-density-not-action-units", "rho: L_RL of the combined policy, old log-probs in action units",
      'old_logp = mb["logp"] - mb["u"].shape[-1] * float(np.log(scale))', 'old_logp = mb["logp"]',
      (_T + "test_combined_rl_loss_uses_the_residual_density_in_action_units",)),
    M(_P, "dynamic-m-wrong-direction", "dynamic m(t): conflict (rho < 0) -> more RL steps per IL step",
      "round(m * 3.0 ** (-rho_bar))", "round(m * 3.0 ** rho_bar)",
      (_T + "test_rho_cosine_and_dynamic_m_direction",)),
    M(_P, "rho-bar-not-ema", "dynamic m(t): rho_bar <- 0.9 rho_bar + 0.1 rho(t), one update per cycle",
      "rho_bar = 0.9 * rho_bar + 0.1 * rho", "rho_bar = rho",
      (_T + "test_main_rho_bar_is_the_ema_of_rho_and_sets_m[pcgrad]",)),
    M(_P, "bc-loss-mean-over-dims", "stage 1, BC: ||mu(s) - a||^2 summed over the action dims",
      "return ((pred - act) ** 2).sum(-1).mean()", "return ((pred - act) ** 2).mean()",
      (_T + "test_losses_values",)),
    M(_R, "il-loss-not-half", "L_IL = -log N(a; base(s), I) = 0.5 ||base(s) - a||^2 + const",
      "return 0.5 * squared_error(base(obs), act)", "return squared_error(base(obs), act)",
      (_T + "test_losses_values",)),
    M(_P, "il-loss-moves-std", "L_IL: NLL of the demo actions, the std detached",
      "mean, std = policy(obs), policy.log_std.exp().detach()", "mean, std = policy(obs), policy.log_std.exp()",
      (_T + "test_loss_shapes",)),
    M(_P, "ppo-unclipped", "L_RL: PPO's clipped surrogate", "ratio.clamp(1 - clip_coef, 1 + clip_coef)", "ratio",
      (_T + "test_clipped_surrogate_clips_the_ratio",)),
    M(_P, "gae-crosses-episodes", "L_RL: GAE advantages, cut at episode ends",
      "last = delta + gamma * lam * (1.0 - dones[t]) * last", "last = delta + gamma * lam * last",
      (_T + "test_gae_cuts_at_episode_ends_and_bootstraps",)),
    M(_R, "no-critic-warmup", "value-only warm-up: the first rollouts train only the critic (ResiP's 5)",
      "if it < args.critic_warmup_iters:", "if it < 0:",
      (_T + "test_main_one_il_step_after_every_m_rl_steps[residual]",)),
    M(_R, "residual-head-not-zero", "residual output: head zero at the start (ResiP)",
      "        nn.init.zeros_(self.r[-1].weight)  # the residual is exactly zero at the start\n", "",
      (_T + "test_zero_init_residual_reproduces_base",)),
    M(_R, "residual-ignores-base-action", "residual input: concat(obs, base action) (ResiP)",
      "self.r(torch.cat([((obs - self.obs_mean) / self.obs_std).clamp(-10, 10), a_base], -1))",
      "self.r(torch.cat([((obs - self.obs_mean) / self.obs_std).clamp(-10, 10), 0 * a_base], -1))",
      (_T + "test_residual_penalty_and_critic_input",)),
    M(_R, "no-residual-penalty", "residual penalty: l1 |r| + l2 r^2 on the residual mean, in L_RL (ResiP)",
      "return surrogate + residual_penalty(d.mean, l1, l2), surrogate, approx_kl",
      "return surrogate, surrogate, approx_kl", (_T + "test_residual_rl_loss_is_ppo_plus_penalty",)),
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

"""Mutation check of the fidelity tables: each mutant breaks one row (or one equation of a docstring's map) in a copy
of the repository, and the tests it names must fail there.

    python tools/mutants.py               # every mutant: killed / survived, exit 1 on a survivor or a stale mutant
    python tools/mutants.py --list        # the table: file, name, the row it breaks, its tests
    python tools/mutants.py rlpd rlif     # only the mutants of files whose name contains one of these words
    python tools/mutants.py --jobs 1      # one at a time (default: 2 copies of the repository side by side)

The heavy imports (torch, gymnasium, pytest) are loaded once; each mutant's tests run in a forked child.

A mutant replaces `old` (which must occur exactly once in its file, else the table is stale and the run fails) by
`new`, runs only its `tests` (pytest node ids), and is killed when they fail. Each section below belongs to one
method file; add a mutant whenever a fidelity row or an equation gains a test.
"""
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import NamedTuple

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: each forked test run uses one thread
import gymnasium  # noqa: E402,F401  (the heavy imports, loaded once and shared by every forked test run)
import numpy  # noqa: E402,F401
import pytest  # noqa: E402
import torch  # noqa: E402,F401
import tyro  # noqa: E402,F401
from torch.utils.tensorboard import SummaryWriter  # noqa: E402,F401

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


def start_tests(m, dest):
    """Apply m in the copy `dest` and start its tests in a forked child (the heavy imports are already loaded, so
    a mutant costs only its tests). Returns (pid, the original text, start time); 'STALE: ...' if m.old is not
    found exactly once."""
    path = os.path.join(dest, m.file)
    original = open(path).read()
    if (n := original.count(m.old)) != 1:
        return f"STALE: the text is found {n} times in {m.file}"
    open(path, "w").write(original.replace(m.old, m.new))
    pid = os.fork()
    if pid == 0:  # the child: run pytest in the copy, quietly, for at most 300 s
        try:
            os.chdir(dest)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            signal.alarm(300)
            code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", *m.tests])
        except BaseException:
            code = 1
        os._exit(int(code))
    return pid, original, time.time()


def outcome(status):
    """killed when the tests failed (or hung), STALE when pytest found no such test."""
    code = os.waitstatus_to_exitcode(status)
    if code in (4, 5):  # usage error or no test collected: a test id in the table is wrong
        return "STALE: pytest exit %d (is every test id right?)" % code
    return "killed" if code != 0 else "SURVIVED"


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
    start, results = time.time(), {}
    with tempfile.TemporaryDirectory() as tmp:
        free = [os.path.join(tmp, f"copy{j}") for j in range(jobs)]
        for d in free:
            os.makedirs(d)
            copy_repo(d)
        running, queue = {}, list(enumerate(todo))  # pid -> (index, copy, original text, start)
        while queue or running:
            while queue and free:
                i, m = queue.pop(0)
                d = free.pop()
                started = start_tests(m, d)
                if isinstance(started, str):
                    results[i] = (started, 0.0)
                    free.append(d)
                    continue
                running[started[0]] = (i, d, *started[1:])
            if running:
                pid, status = os.wait()
                i, d, original, t0 = running.pop(pid)
                open(os.path.join(d, todo[i].file), "w").write(original)
                free.append(d)
                results[i] = (outcome(status), time.time() - t0)
                print(f"{results[i][0]:8s} {todo[i].file}: {todo[i].name} ({results[i][1]:.1f} s)", flush=True)
    bad = [(todo[i], r) for i, (r, _) in sorted(results.items()) if r != "killed"]
    print(f"{len(todo) - len(bad)} of {len(todo)} mutants killed in {time.time() - start:.0f} s")
    for m, r in bad:
        print(f"  {r}: {m.file} {m.name} ({m.row})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The parts every algorithm file carries word for word (CleanRL style: copied, never imported).

Each `<method>.py` in this repository holds its own copy of the blocks below, between the markers
`# ---- shared: <name> ----` and `# ---- end shared ----`, so that it runs alone when copied into an empty
folder, and `diff rlpd.py rlif.py` shows only the method's own idea. `tests/test_template.py` checks that
every copy is identical to this file. To change a shared block, change it here and in every file.

This file is also runnable, as a smoke test of the shared parts:
    python template.py --env-id Hopper-v4 --demo-path data/Hopper-v4-medium.npz
"""

import csv
import os
import signal
import sys
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import tyro
from torch.utils.tensorboard import SummaryWriter


@dataclass
class Args:
    env_id: str = "Hopper-v4"
    """gymnasium MuJoCo id (Hopper-v4, Walker2d-v4, HalfCheetah-v4) or metaworld/<task>-v3"""
    demo_path: str = "data/Hopper-v4-medium.npz"
    """demonstrations: a .npz in data/ or minari:<dataset-id>"""
    expert_path: str = "data/Hopper-v4-expert-policy.npz"
    """a shipped policy file (data/<env>-<level>-policy.npz)"""
    eval_episodes: int = 3
    """deterministic evaluation episodes"""
    seed: int = 1
    """seed"""


# ---- shared: make_env ----
def make_env(env_id: str, seed: int, max_episode_steps: int | None = None):
    """A thunk that builds one env: a gymnasium id, or `metaworld/<task>-v3` (MetaWorld MT1, random goals, at
    most 500 steps, the episode ends at success; info["success"] is set). Unknown ids end the run with one sentence."""

    def thunk():
        try:
            if env_id.startswith("metaworld/"):
                import metaworld  # its own time limit sits inside its episode statistics (gym.make's would not)

                env = metaworld.make_mt_envs(env_id.split("/", 1)[1], seed=seed, terminate_on_success=True,
                                             max_episode_steps=max_episode_steps or 500)
            else:
                env = gym.wrappers.RecordEpisodeStatistics(gym.make(env_id, max_episode_steps=max_episode_steps))
        except (gym.error.Error, ValueError, KeyError, ImportError) as e:
            raise SystemExit(f"Unknown env id {env_id!r} ({e}): use a gymnasium MuJoCo id such as Hopper-v4, "
                             "or metaworld/<task>-v3 such as metaworld/pick-place-v3.") from None
        env.action_space.seed(seed)
        return env

    return thunk
# ---- end shared ----


# ---- shared: load_demos ----
DEMO_KEYS = ("observations", "actions", "rewards", "next_observations", "terminations", "truncations")


def load_demos(path: str, env: gym.Env) -> dict[str, np.ndarray]:
    """Demonstrations as float32 arrays with D4RL/Minari keys, from a .npz (data/make_data.py writes them) or
    `minari:<dataset-id>` (a local Minari dataset), checked against `env` before any training by the table of checks
    below; the first that fails ends the run with one sentence that names the file, what is wrong and what to do."""
    if path.startswith("minari:"):
        try:
            import minari
        except ImportError:
            raise SystemExit(f"{path} needs minari: pip install 'minari[hdf5]'.") from None
        try:
            eps = list(minari.load_dataset(path[len("minari:"):]).iterate_episodes())
        except (FileNotFoundError, ValueError, KeyError) as e:
            raise SystemExit(f"Minari dataset {path} is not on disk ({e}): download it with `minari download "
                             f"{path[len('minari:'):]}`, or check the id with `minari list local`.") from None
        d = {"observations": np.concatenate([e.observations[:-1] for e in eps] or [[]]),
             "next_observations": np.concatenate([e.observations[1:] for e in eps] or [[]]),
             **{k: np.concatenate([getattr(e, k) for e in eps] or [[]])
                for k in ("actions", "rewards", "terminations", "truncations")}}
    elif not os.path.exists(path):
        raise SystemExit(f"Demo file {path} not found: make it with `python data/make_data.py rollout --env-id "
                         f"<env>` (or `metaworld`), or pass --demo-path to an existing file.")
    else:
        import zipfile

        try:
            with open(path, "rb") as f:
                if f.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):  # an .npz is a zip archive
                    raise ValueError("it is not a zip archive")
            with np.load(path, allow_pickle=False) as f:
                d = {k: f[k] for k in DEMO_KEYS if k in f.files}
                files = f.files
        except (OSError, ValueError, EOFError, TypeError, AttributeError, zipfile.BadZipFile) as e:
            raise SystemExit(f"Demo file {path} is not a readable .npz ({e}): make it with `python data/make_data.py`"
                             " or np.savez with the keys " + ", ".join(DEMO_KEYS) + ".") from None
        if missing := [k for k in DEMO_KEYS if k not in d]:
            raise SystemExit(f"Demo file {path} lacks the key(s) {', '.join(missing)} (it has "
                             f"{', '.join(files) or 'none'}): it needs {', '.join(DEMO_KEYS)}, as data/make_data.py "
                             "writes them.")
    if bad := [k for k, v in d.items() if np.asarray(v).dtype.kind not in "biuf"]:
        raise SystemExit(f"Demo file {path} holds {bad[0]} of dtype {np.asarray(d[bad[0]]).dtype}, not numbers: store "
                         "every key as a number array.")
    d = {k: np.asarray(v, np.float32) for k, v in d.items()}
    if empty := [k for k, v in d.items() if v.size == 0]:
        raise SystemExit(f"Demo file {path} holds no transitions ({', '.join(empty)} empty): pass a file with at "
                         "least one episode.")
    d = {k: v.reshape(v.shape[0] if v.ndim else 1, -1) if k in ("observations", "next_observations", "actions")
         else v.reshape(-1) for k, v in d.items()}
    if len({len(v) for v in d.values()}) > 1:
        raise SystemExit(f"Demo file {path} holds keys of different lengths (" + ", ".join(
            f"{k} {len(v)}" for k, v in d.items()) + "): every key needs one row per transition; remake the file.")
    space, n, obs_shape = env.action_space, len(d["actions"]), env.observation_space.shape
    if d["observations"].shape[1:] != obs_shape or d["next_observations"].shape[1:] != obs_shape or \
            d["actions"].shape[1:] != space.shape:
        raise SystemExit(f"Demo file {path} holds observations of shape {d['observations'].shape[1:]} and actions of "
                         f"shape {d['actions'].shape[1:]}, but the env has {obs_shape} and {space.shape}: "
                         "pass --demo-path made for this env.")
    low, high = (space.low, space.high) if isinstance(space, gym.spaces.Box) else (-np.inf, np.inf)
    checks = [  # (True at each bad row, what is wrong at the first one and what to do); in order, the first fails
        *[(~np.isfinite(v.reshape(n, -1)).all(1), f"holds a non-finite value in {k} at row {{row}} ({{count}} of {n} "
           "rows): drop or fix those rows before training.") for k, v in d.items()],
        (~((d["actions"] >= low - 1e-3) & (d["actions"] <= high + 1e-3)).all(1), "holds actions outside the env's "
         f"bounds [{np.min(low)}, {np.max(high)}] (first at row {{row}}: {{action}}): the demos are for another env or "
         "action scale; rescale them to the env's action space."),
        *[(~np.isin(d[k], (0.0, 1.0)), f"holds {k} other than 0 and 1 (row {{row}}): mark episode ends with 0/1 flags.")
          for k in ("terminations", "truncations")],
        (np.array([not (d["terminations"] + d["truncations"]).any()]), "marks no episode end (terminations and "
         "truncations are all 0), so its episodes cannot be told apart: set terminations or truncations to 1 at each "
         "episode's last step."),
    ]
    for bad, sentence in checks:
        if bad.any():
            row = int(np.argmax(bad))
            raise SystemExit(f"Demo file {path} " + sentence.format(row=row, count=int(bad.sum()),
                                                                     action=np.round(d["actions"][row], 3).tolist()))
    return d
# ---- end shared ----


# ---- shared: load_policy ----
def load_policy(path: str):
    """A shipped policy (data/<env>-<level>-policy.npz, see data/README.md) as a numpy function obs -> action."""
    if not os.path.exists(path):
        raise SystemExit(f"Policy file {path} not found: make it with `python data/make_data.py train --env-id <env>`.")
    p = dict(np.load(path))

    def act(obs: np.ndarray) -> np.ndarray:
        x = np.clip((obs - p["obs_mean"]) / np.sqrt(p["obs_var"] + 1e-8), -10, 10)
        h = np.tanh(np.tanh(x @ p["W0"] + p["b0"]) @ p["W1"] + p["b1"])
        return np.clip(h @ p["W2"] + p["b2"], -1.0, 1.0).astype(np.float32)

    return act
# ---- end shared ----


# ---- shared: evaluate ----
def evaluate(act_fn, env_id: str, episodes: int, seed: int, max_steps: int | None = None) -> tuple[float, float]:
    """Mean return and success rate (nan where the env has no success flag) of `act_fn(obs) -> action` over
    `episodes` deterministic episodes with seeds seed, seed + 1, ..., each at most max_steps (None: the env's limit)."""
    env = make_env(env_id, seed, max_steps)()
    returns, successes = [], []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, ret, info = False, 0.0, {}
        while not done:
            obs, r, term, trunc, info = env.step(act_fn(obs))
            ret, done = ret + float(r), term or trunc
        returns.append(ret)
        successes.append(float(info["success"]) if "success" in info else np.nan)
    env.close()
    return float(np.mean(returns)), float(np.mean(successes))
# ---- end shared ----


# ---- shared: logger ----
class Logger:
    """TensorBoard scalars and a long-format metrics.csv (step,key,value) under runs/<run_name>/.
    From its creation until finish(), SIGINT (Ctrl-C) and SIGTERM only set `interrupted`: every loop written
    `for x in log.steps(...)` then ends before its next iteration (a safe point), log() writes nothing more, and
    main() ends with `return log.finish(model_state)`, which saves model.pt as it is (with "args", "interrupted" and
    "step", the last step logged) and returns 0, or 128 + the signal number. A second signal ends the run at once.
    A success rate of nan (an env without a success flag) is not logged."""

    def __init__(self, run_name: str, args):
        self.dir = os.path.join("runs", run_name)
        self.writer, self.args = SummaryWriter(self.dir), vars(args)
        table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
        self.writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + table)
        self.file = open(os.path.join(self.dir, "metrics.csv"), "w", newline="")
        self.csv = csv.writer(self.file)
        self.csv.writerow(["step", "key", "value"])
        self.step, self.interrupted, self.stopped, self.exit_code, self.handlers = 0, False, False, 0, {}
        try:
            self.handlers = {s: signal.signal(s, self.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread: signals keep their handlers
            pass

    def on_signal(self, signum, frame):
        if self.interrupted or self.file.closed:
            raise SystemExit(f"{signal.Signals(signum).name} again: stopped at once; {self.dir} holds what was saved.")
        self.interrupted, self.exit_code = True, 128 + signum
        print(f"\n{signal.Signals(signum).name}: stopping at the next safe point to save the model "
              "(send it again to quit at once).", file=sys.stderr, flush=True)

    def steps(self, iterable):
        """`iterable`, cut short once a signal has come."""
        for x in iterable:
            if self.interrupted:
                self.stopped = True
                return
            yield x

    def log(self, step: int, **scalars: float):
        if self.stopped:
            return
        self.step = int(step)
        for k, v in scalars.items():
            if k.endswith("success") and np.isnan(v):  # the env has no success flag
                continue
            if not np.isfinite(v) and k.startswith("losses/"):
                self.restore_signals()
                raise SystemExit(f"{k} became {v} at step {step}: lower the learning rate or check the demo data.")
            self.writer.add_scalar(k, v, step)
            self.csv.writerow([step, k, float(v)])
        self.file.flush()

    def restore_signals(self):
        for s, handler in self.handlers.items():
            signal.signal(s, handler)
        self.handlers = {}

    def close(self):
        self.writer.close()
        self.file.close()
        if self.interrupted:
            print(f"Interrupted at step {self.step}: model.pt (marked \"interrupted\"), metrics.csv and the "
                  f"TensorBoard file are in {self.dir}; exit code {self.exit_code}.", file=sys.stderr)
        self.restore_signals()

    def finish(self, model_state: dict) -> int:
        """Save model.pt (model_state with "args", "interrupted", "step"), close, say where everything is; main()
        returns what this returns (0, or 128 + the signal that interrupted the run)."""
        path = os.path.join(self.dir, "model.pt")
        torch.save({**model_state, "args": self.args, "interrupted": self.interrupted, "step": self.step}, path)
        self.close()
        print(f"model: {path}; metrics: {os.path.join(self.dir, 'metrics.csv')} "
              "(TensorBoard: tensorboard --logdir runs)")
        return self.exit_code
# ---- end shared ----


def main():
    args = tyro.cli(Args)
    env = make_env(args.env_id, args.seed)()
    demos = load_demos(args.demo_path, env)
    n_ep = int((demos["terminations"] + demos["truncations"]).sum())
    print(f"{args.demo_path}: {len(demos['actions'])} transitions, {n_ep} episodes, "
          f"mean episode return {demos['rewards'].sum() / max(n_ep, 1):.1f}")
    ret, succ = evaluate(load_policy(args.expert_path), args.env_id, args.eval_episodes, args.seed)
    print(f"{args.expert_path}: eval/return {ret:.1f}, eval/success {succ}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

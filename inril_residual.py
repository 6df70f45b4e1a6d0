"""IN-RIL with network separation: an IL-trained base policy plus an RL-trained residual, m(t) RL : 1 IL updates.

Paper: Gao et al. 2025, "IN-RIL: Interleaved Reinforcement and Imitation Learning for Policy Fine-Tuning",
arXiv 2505.10442. There is no public code; this file is a from-scratch implementation (see README.md). The residual
follows ResiP (Ankile et al. 2024, ankile/robust-rearrangement), the closest public precedent (fidelity table below).

Equations -> code
    Stage 1, BC of the base: min E_{(s,a)~D_exp} ||base(s) - a||^2          -> squared_error(), stage 1 in main()
    L_IL = E_{(s,a)~D_exp}[-log N(a; base(s), I)] = 0.5 ||base(s) - a||^2 + const -> il_loss()
    Network separation (Sec. 4.3): a = base(s) + scale * u,  u ~ pi_res(. | s, base(s)) = N(r(s, base(s)), std).
        As in ResiP: input concat(obs, base action), r's last layer zero (fine-tuning starts exactly at the BC
        policy), scale 0.1, initial log std -1.5 (action-space std 0.1 * e^-1.5 = 0.022)   -> BasePolicy, Residual
    L_RL: PPO's clipped surrogate on log pi_res(u | s, a_base), GAE advantages, plus ResiP's penalty on the residual
        mean l1 * |r| + l2 * r^2 (l1 = 0, l2 = 0.01)         -> residual_loss(), ppo_loss(), gae(), residual_penalty()
        the critic V(s, a_base) sees the base action too (ResiP): 0.5 (V - R)^2 -> value_loss(), gradient_step()
    Interleaved update (Sec. 4.1), step sizes alpha_RL and alpha_IL in two Adam states:
        m(t) RL steps on the residual  theta_res <- theta_res - alpha_RL grad L_RL   -> rl_step()
        then one IL step on the base   theta_base <- theta_base - alpha_IL grad L_IL -> il_step()
        IL gradients reach only the base and RL gradients only the residual, so no surgery is needed. The paper's
        cycle "one IL step, then m RL steps" is the same sequence, as stage 1 ends with IL steps.
        main()'s loop: rl_step(); since_il += 1; if since_il >= m_t: measure_rho(); il_step().
    rho(t) = cos(grad L_IL, grad L_RL) (Assumption 1 / Theorem 1)              -> measure_rho(), combined_logp()
        The losses act on different networks, so rho is measured where both could act: on the base's parameters,
        with L_RL the PPO loss of the combined policy N(base(s) + scale * r(s, base(s)), scale * std) (old log-probs:
        the rollout's log pi_res(u) - act_dim * log(scale), the same density in action units), i.e. the RL gradient
        the base would get if RL trained it. Both are gradients of losses to be minimised: rho > 0 aligned, rho < 0
        conflict (some write-ups flip the sign). Measured once per cycle, at the IL step, on its demo minibatch and
        the last RL minibatch.
    Dynamic m(t) (--dynamic-m; ours: the paper ties the best ratio to rho but publishes no rule and ran fixed m),
        one EMA per cycle (per IL step), the same in both files:                -> dynamic_m()
        rho_bar <- 0.9 rho_bar + 0.1 rho(t);  m(t) = clip(round(m * 3^(-rho_bar)), m_min, m_max):
        aligned gradients (rho -> 1) run IL up to 3x more often (m/3), conflicting ones (rho -> -1) up to 3x rarer.

--il-mode: `interleave` (IN-RIL), `none` (residual RL only, base frozen: RL-only fine-tuning with network
separation), `regularize` (residual loss L_RL + bc_coef * BC of the combined action on the demos, base frozen).
Base: deterministic MLP 2 x 256 ReLU; observations normalised by the demos' fixed mean/std (saved with the model).
The paper's regime: --sparse-reward with --num-demo-episodes N (a BC start below 100% success).

Run:
    python inril_residual.py --env-id Hopper-v4 --m 10
    python inril_residual.py --env-id Walker2d-v4 --dynamic-m --residual-scale 0.2
    python inril_residual.py --env-id metaworld/pick-place-v3 --sparse-reward --num-demo-episodes 5 --bc-steps 3000

Fidelity (paper: arXiv 2505.10442, no code; ResiP: ankile/robust-rearrangement at its newest commit unless a
commit is named; "rl/residual_ppo.yaml" is src/config/rl/residual_ppo.yaml, present until commit e37811d)
| design choice | paper / official value (source) | this file | why different |
|---|---|---|---|
| residual input; critic input | concat(obs, base action) (src/models/residual.py, src/train/residual_ppo.py);
  obs + base action (models/residual.py) | same | - |
| residual output | scale 0.1, head zero at the start (action_head_std 0.0, src/config/actor/residual_mlp.yaml) |
  scale 0.1, last layer's weight and bias zero | - |
| residual initial log std | -1.5, learned (actor/residual_mlp.yaml; rl/residual_ppo.yaml until e37811d); -1.0, fixed
  (actor/residual_diffusion.yaml); -3.5 (rl/residual_ppo.yaml @4ae40a1, May 2024) | -1.5 (std 0.022 in action units),
  learned | -3.5 gives 0.003 in action units: ResiP runs 1e8+ env steps with 1,024 envs, here 1e5-3e5 must explore |
| residual penalty | residual_l1 0.0, residual_l2 0.01 on the unscaled residual mean (rl/residual_ppo.yaml,
  train/residual_ppo.py; @4ae40a1: residual_regularization 0.01 on the L2; both 0.0 in the newest
  src/config/base_residual_rl.yaml) | l1 0, l2 0.01 (--residual-l1, --residual-l2) | keeps the residual a small
  correction, the point of issue 13 |
| value-only warm-up | n_iterations_train_only_value 5 (rl/residual_ppo.yaml @4ae40a1; 0 in later configs) | 5
  rollouts (--critic-warmup-iters) | - |
| networks | actor and critic 2 x 256 ReLU (actor/residual_mlp.yaml) | same; base 2 x 256 ReLU MLP | ResiP's base is a
  diffusion or MLP policy |
| PPO | actor lr 3e-4, critic lr 5e-3, gamma 0.999, clip 0.2, target KL 0.1, max grad norm 1.0, 1,024 envs x 700
  steps, 50 epochs of 1 minibatch (src/config/base_residual_rl.yaml) | actor lr 3e-4, critic lr 1e-3, gamma 0.99,
  clip 0.2, target KL 0.1, max grad norm 0.5, 8 envs x 256 steps, 10 epochs x 8 minibatches | CPU budget; the PPO
  settings of inril_pcgrad.py, so the two files compare |
| base updates during RL | ResiP: none, or BC by its own optimizer at lr 5e-5 (experiment/rl/residual_ppo_w_bc.yaml);
  IN-RIL: one IL step per m RL steps (Sec. 4.1) | one IL step per m(t) RL steps, own Adam state, il_lr 3e-4 | IN-RIL |
| m, rho, dynamic m | paper: fixed m, 5-15 robust; rho formula not public | m = 10; rho and --dynamic-m as in
  inril_pcgrad.py | not public; dynamic m is ours |
| tasks, reward | Robomimic (300 demos), FurnitureBench (50 demos): sparse success; Gym locomotion: dense | MetaWorld
  scripted demos with --sparse-reward and --num-demo-episodes; Hopper/Walker2d dense | what installs here |
"""

import csv
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """torch.backends.cudnn.deterministic"""
    cuda: bool = False
    """use CUDA if available"""
    threads: int = 1
    """torch CPU threads"""
    env_id: str = "Hopper-v4"
    """gymnasium MuJoCo id, or metaworld/<task>-v3"""
    sparse_reward: bool = False
    """MetaWorld only: reward 1 on the step of success (the episode ends there), else 0, instead of the dense reward"""
    demo_path: str = ""
    """demonstrations (.npz or minari:<id>); empty: data/<env-id>-medium.npz, or data/metaworld-<task>.npz"""
    num_demo_episodes: int = 0
    """clone only the first N demo episodes (stage 1 and the IL steps); 0: all"""
    chunk_size: int = 1
    """action chunk length k: the policy outputs k actions, executed open loop (1 on locomotion)"""
    # Stage 1: BC
    bc_steps: int = 20_000
    """most BC gradient steps (stage 1 stops earlier when the loss plateaus)"""
    bc_batch_size: int = 256
    """BC minibatch"""
    bc_lr: float = 1e-3
    """BC learning rate"""
    # Stage 2: PPO fine-tuning with interleaved IL
    total_timesteps: int = 300_000
    """env steps of fine-tuning"""
    num_envs: int = 8
    """parallel envs"""
    num_steps: int = 256
    """steps per env per rollout"""
    actor_lr: float = 3e-4
    """alpha_RL: learning rate of the RL steps (their own Adam state)"""
    il_lr: float = 3e-4
    """alpha_IL: learning rate of the interleaved IL steps (their own Adam state)"""
    critic_lr: float = 1e-3
    """value learning rate"""
    gamma: float = 0.99
    """discount"""
    gae_lambda: float = 0.95
    """GAE lambda"""
    update_epochs: int = 10
    """PPO epochs per rollout"""
    num_minibatches: int = 8
    """PPO minibatches per epoch (one RL gradient step each; 8 -> minibatches of 256)"""
    clip_coef: float = 0.2
    """PPO clip"""
    max_grad_norm: float = 0.5
    """gradient clipping"""
    target_kl: float = 0.1
    """stop the epoch loop when the approximate KL exceeds this"""
    residual_scale: float = 0.1
    """scale of the residual in action units (actions live in [-1, 1])"""
    residual_log_std: float = -1.5
    """initial log std of u, before the scale (ResiP's init_logstd; action-space std = scale * e^log_std)"""
    residual_l1: float = 0.0
    """penalty l1 * mean |r(s, a_base)| on the residual mean (ResiP's residual_l1)"""
    residual_l2: float = 0.01
    """penalty l2 * mean r(s, a_base)^2 on the residual mean (ResiP's residual_l2)"""
    critic_warmup_iters: int = 5
    """rollouts at the start that train only the value net (policy frozen, no IL steps)"""
    il_mode: Literal["interleave", "none", "regularize"] = "interleave"
    """interleave: IN-RIL; none: residual RL only; regularize: L_RL + bc_coef * BC of the combined action"""
    m: int = 10
    """RL gradient steps (residual) per IL gradient step (base)"""
    dynamic_m: bool = False
    """adapt m(t) from rho(t) (see the docstring)"""
    m_min: int = 2
    """lower bound of m(t)"""
    m_max: int = 30
    """upper bound of m(t)"""
    bc_coef: float = 0.1
    """lambda of the regularisation baseline"""
    il_batch_size: int = 256
    """demo minibatch of an IL step (and of the gradient measured for rho)"""
    compile: bool = False
    """torch.compile the value and residual losses (fwd and bwd); pays only on long runs (benchmarks/throughput/)"""
    eval_every: int = 20_000
    """env steps between evaluations"""
    eval_episodes: int = 5
    """deterministic evaluation episodes"""


# ---- shared: make_env ----
def make_env(env_id: str, seed: int, max_episode_steps: int | None = None):
    """A thunk that builds one env: a gymnasium id, or `metaworld/<task>-v3` (MetaWorld MT1, random goals, at
    most 500 steps, the episode ends at success; info["success"] is set). Unknown ids end the run with one sentence."""

    def thunk():
        try:
            if env_id.startswith("metaworld/"):
                import metaworld  # noqa: F401  (registers the Meta-World/* ids)

                env = gym.make("Meta-World/MT1", env_name=env_id.split("/", 1)[1], seed=seed,  # has episode stats
                               terminate_on_success=True, max_episode_steps=max_episode_steps or 500)
            else:
                env = gym.wrappers.RecordEpisodeStatistics(gym.make(env_id, max_episode_steps=max_episode_steps))
        except (gym.error.Error, ValueError, KeyError, ImportError) as e:
            raise SystemExit(f"Unknown env id {env_id!r} ({e}): use a gymnasium MuJoCo id such as Hopper-v4, "
                             "or metaworld/<task>-v3 such as metaworld/pick-place-v3.") from None
        env.action_space.seed(seed)
        return env

    return thunk
# ---- end shared ----


class ChunkedActions(gym.Wrapper):
    """Action chunking: one step takes k actions (flattened), runs them open loop, sums the rewards."""

    def __init__(self, env, k):
        super().__init__(env)
        self.k, low, high = k, env.action_space.low, env.action_space.high
        self.action_space = gym.spaces.Box(np.tile(low, k), np.tile(high, k), dtype=np.float32)

    def step(self, action):
        total = 0.0
        for a in np.split(np.asarray(action), self.k):
            obs, r, term, trunc, info = self.env.step(a)
            total += float(r)
            if term or trunc:
                break
        return obs, total, term, trunc, info


class SuccessReward(gym.Wrapper):
    """Reward 1 on the step where info["success"] is set (MetaWorld ends there), else 0; episodic_return stays dense"""

    def step(self, action):
        obs, _, term, trunc, info = self.env.step(action)
        return obs, float(info["success"]), term, trunc, info


class RewardScaler:
    """Rewards divided by the running std of the discounted return (as gymnasium's NormalizeReward), clipped to 10."""

    def __init__(self, num_envs: int, gamma: float):
        self.mean, self.var, self.count, self.ret, self.gamma = 0.0, 1.0, 1e-4, np.zeros(num_envs), gamma

    def __call__(self, r: np.ndarray, ended: np.ndarray) -> np.ndarray:
        self.ret = self.ret * self.gamma + r
        n, delta, tot = len(r), self.ret.mean() - self.mean, self.count + len(r)
        self.var = (self.var * self.count + self.ret.var() * n + delta**2 * self.count * n / tot) / tot
        self.mean, self.count = self.mean + delta * n / tot, tot
        self.ret[ended] = 0.0
        return np.clip(r / np.sqrt(self.var + 1e-8), -10, 10)


# ---- shared: load_demos ----
DEMO_KEYS = ("observations", "actions", "rewards", "next_observations", "terminations", "truncations")


def load_demos(path: str, env: gym.Env) -> dict[str, np.ndarray]:
    """Demonstrations as float32 arrays with D4RL/Minari keys, from a .npz (data/make_data.py writes them) or
    `minari:<dataset-id>` (a local Minari dataset). Checked once, vectorised, against `env` before any training:
    every key present, numeric, finite, of one length > 0, shapes and action bounds of `env`, episode ends marked;
    anything else ends the run with one sentence that names the file, what is wrong and what to do."""
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
                if missing := [k for k in DEMO_KEYS if k not in f.files]:
                    raise SystemExit(f"Demo file {path} lacks the key(s) {', '.join(missing)} (it has "
                                     f"{', '.join(f.files) or 'none'}): it needs {', '.join(DEMO_KEYS)}, as "
                                     "data/make_data.py writes them.")
                d = {k: f[k] for k in DEMO_KEYS}
        except (OSError, ValueError, EOFError, TypeError, AttributeError, zipfile.BadZipFile) as e:
            raise SystemExit(f"Demo file {path} is not a readable .npz ({e}): make it with "
                             "`python data/make_data.py` or np.savez with the keys " + ", ".join(DEMO_KEYS) + ".") from None
    for k in d:
        try:
            d[k] = np.asarray(d[k], np.float32)
        except (TypeError, ValueError):
            raise SystemExit(f"Demo file {path} holds {k} of dtype {np.asarray(d[k]).dtype}, not numbers: store every "
                             "key as a number array.") from None
    if empty := [k for k, v in d.items() if v.size == 0]:
        raise SystemExit(f"Demo file {path} holds no transitions ({', '.join(empty)} empty): pass a file with at "
                         "least one episode.")
    d = {k: v.reshape(v.shape[0] if v.ndim else 1, -1) if k in ("observations", "next_observations", "actions")
         else v.reshape(-1) for k, v in d.items()}
    if len({len(v) for v in d.values()}) > 1:
        raise SystemExit(f"Demo file {path} holds keys of different lengths (" + ", ".join(
            f"{k} {len(v)}" for k, v in d.items()) + "): every key needs one row per transition; remake the file.")
    want_obs, want_act = env.observation_space.shape, env.action_space.shape
    if (d["observations"].shape[1:] != want_obs or d["next_observations"].shape[1:] != want_obs
            or d["actions"].shape[1:] != want_act):
        raise SystemExit(f"Demo file {path} holds observations of shape {d['observations'].shape[1:]} and actions of "
                         f"shape {d['actions'].shape[1:]}, but the env has {want_obs} and {want_act}: "
                         "pass --demo-path made for this env.")
    for k, v in d.items():
        if not (ok := np.isfinite(v).reshape(len(v), -1).all(1)).all():
            raise SystemExit(f"Demo file {path} holds a non-finite value in {k} at row {int(np.argmin(ok))} "
                             f"({int((~ok).sum())} of {len(v)} rows): drop or fix those rows before training.")
    if isinstance(env.action_space, gym.spaces.Box):
        low, high, tol = env.action_space.low, env.action_space.high, 1e-3
        if not (ok := ((d["actions"] >= low - tol) & (d["actions"] <= high + tol)).all(1)).all():
            i = int(np.argmin(ok))
            raise SystemExit(f"Demo file {path} holds actions outside the env's bounds [{low.min()}, {high.max()}] "
                             f"(first at row {i}: {np.round(d['actions'][i], 3).tolist()}): the demos are for another "
                             "env or action scale; rescale them to the env's action space.")
    for k in ("terminations", "truncations"):
        if not np.isin(d[k], (0.0, 1.0)).all():
            raise SystemExit(f"Demo file {path} holds {k} other than 0 and 1 (row "
                             f"{int(np.argmin(np.isin(d[k], (0.0, 1.0))))}): mark episode ends with 0/1 flags.")
    if not (d["terminations"] + d["truncations"]).any():
        raise SystemExit(f"Demo file {path} marks no episode end (terminations and truncations are all 0), so its "
                         "episodes cannot be told apart: set terminations or truncations to 1 at each episode's last "
                         "step.")
    return d
# ---- end shared ----


def default_demo_path(env_id: str) -> str:
    """data/<env-id>-medium.npz for gymnasium ids; data/metaworld-<task>.npz (50 scripted demos) for MetaWorld."""
    name = env_id.replace("/", "-") + ("" if env_id.startswith("metaworld/") else "-medium")
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", f"{name}.npz")


def first_episodes(demos: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The first n episodes of `demos` (n = 0: all of them); one sentence if the file holds fewer."""
    if n == 0:
        return demos
    ends = np.flatnonzero(np.logical_or(demos["terminations"], demos["truncations"]))
    if n < 0 or n > len(ends):
        raise SystemExit(f"--num-demo-episodes {n} asks for more episodes than the demo file holds ({len(ends)}).")
    return {k: v[: ends[n - 1] + 1] for k, v in demos.items()}


def chunk_targets(demos, k):
    """(N, k * act_dim): the k demo actions from each step on, the episode's last action repeated past its end."""
    ends, n = np.logical_or(demos["terminations"], demos["truncations"]), len(demos["actions"])
    ep_end = np.minimum.accumulate(np.where(ends, np.arange(n), n - 1)[::-1])[::-1]  # each step's episode end
    idx = np.minimum(np.arange(n)[:, None] + np.arange(k)[None], ep_end[:, None])
    return demos["actions"][idx].reshape(n, -1)


# ---- shared: evaluate ----
def evaluate(act_fn, env_id: str, episodes: int, seed: int) -> tuple[float, float]:
    """Mean return and success rate (nan where the env has no success flag) of `act_fn(obs) -> action` over
    `episodes` deterministic episodes with seeds seed, seed + 1, ..."""
    env = make_env(env_id, seed)()
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
            print(f"Interrupted at step {self.step}: model.pt (marked \"interrupted\"), metrics.csv and the TensorBoard "
                  f"file are in {self.dir}; exit code {self.exit_code}.", file=sys.stderr)
        self.restore_signals()

    def finish(self, model_state: dict) -> int:
        """Save model.pt (model_state with "args", "interrupted", "step"), close, say where everything is; main()
        returns what this returns (0, or 128 + the signal that interrupted the run)."""
        path = os.path.join(self.dir, "model.pt")
        torch.save({**model_state, "args": self.args, "interrupted": self.interrupted, "step": self.step}, path)
        self.close()
        print(f"model: {path}; metrics: {os.path.join(self.dir, 'metrics.csv')} (TensorBoard: tensorboard --logdir runs)")
        return self.exit_code
# ---- end shared ----


def log_episodes(log, step: int, final_info: dict, ended: np.ndarray):
    """charts/episodic_return (the env's own: dense on MetaWorld) and, with a success flag, charts/episodic_success."""
    for i in np.where(ended)[0]:
        log.log(step, **{"charts/episodic_return": float(final_info["episode"]["r"][i])})
        if "success" in final_info:
            log.log(step, **{"charts/episodic_success": float(final_info["success"][i])})


def mlp(inp, out, hidden=256, out_std=1.0):
    last = nn.Linear(hidden, out)
    nn.init.orthogonal_(last.weight, out_std)
    nn.init.zeros_(last.bias)
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), last)


class BasePolicy(nn.Module):
    """Deterministic base policy base(s) (2 x 256 ReLU); trained by IL only; obs normalised inside."""

    def __init__(self, obs_dim, act_dim, obs_mean, obs_std):
        super().__init__()
        self.register_buffer("obs_mean", torch.as_tensor(obs_mean))
        self.register_buffer("obs_std", torch.as_tensor(obs_std))
        self.mu = mlp(obs_dim, act_dim, out_std=0.01)

    def forward(self, obs):
        """The deterministic base action base(s)."""
        return self.mu(((obs - self.obs_mean) / self.obs_std).clamp(-10, 10))


class Residual(nn.Module):
    """pi_res(u | s, a_base) = N(r(s, a_base), std): 2 x 256 ReLU on concat(norm(s), a_base), last layer zero."""

    def __init__(self, obs_dim, act_dim, obs_mean, obs_std, log_std):
        super().__init__()
        self.register_buffer("obs_mean", torch.as_tensor(obs_mean))
        self.register_buffer("obs_std", torch.as_tensor(obs_std))
        self.r = mlp(obs_dim + act_dim, act_dim)
        nn.init.zeros_(self.r[-1].weight)  # the residual is exactly zero at the start
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std)))

    def mean(self, obs, a_base):
        return self.r(torch.cat([((obs - self.obs_mean) / self.obs_std).clamp(-10, 10), a_base], -1))

    def dist(self, obs, a_base):
        return torch.distributions.Normal(self.mean(obs, a_base), self.log_std.exp(), validate_args=False)


class Critic(nn.Module):
    """V(s, a_base), 2 x 256 ReLU on concat(norm(s), a_base) (ResiP: the critic sees the base action too)."""

    def __init__(self, obs_dim, act_dim, obs_mean, obs_std):
        super().__init__()
        self.register_buffer("obs_mean", torch.as_tensor(obs_mean))
        self.register_buffer("obs_std", torch.as_tensor(obs_std))
        self.v = mlp(obs_dim + act_dim, 1)

    def forward(self, obs, a_base):
        return self.v(torch.cat([((obs - self.obs_mean) / self.obs_std).clamp(-10, 10), a_base], -1)).squeeze(-1)


# ---- losses and gradient tools (pure functions; tests call them) ----
def squared_error(pred: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """||pred - a||^2 summed over action dims, mean over the batch: stage 1's BC loss and the logged demo MSE."""
    return ((pred - act) ** 2).sum(-1).mean()


def il_loss(base: BasePolicy, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """L_IL = E[-log N(a; base(s), I)] up to a constant: 0.5 * squared error summed over action dims; scalar."""
    return 0.5 * squared_error(base(obs), act)


def residual_penalty(r_mean: torch.Tensor, l1: float, l2: float) -> torch.Tensor:
    """ResiP's penalty on the (unscaled) residual mean: l1 * mean |r| + l2 * mean r^2; scalar."""
    return l1 * r_mean.abs().mean() + l2 * (r_mean**2).mean()


def act_combined(base: BasePolicy, residual: Residual, obs: torch.Tensor, scale: float) -> torch.Tensor:
    """The deterministic action base(s) + scale * r(s, base(s))."""
    a_base = base(obs)
    return a_base + scale * residual.mean(obs, a_base)


def combined_logp(base, residual, obs, a_exec, scale):
    """log N(a_exec; base(s) + scale * r(s, base(s)), scale * std): the combined policy, differentiable in the
    base, used only to measure the RL gradient on the base's parameters (rho)."""
    std = scale * residual.log_std.exp()
    return torch.distributions.Normal(act_combined(base, residual, obs, scale), std).log_prob(a_exec).sum(-1)


def ppo_loss(new_logp, old_logp, adv, clip_coef):
    """PPO's clipped surrogate, to be minimised; advantages normalised per minibatch. Returns (loss, approx_kl)."""
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    log_ratio = new_logp - old_logp
    ratio = log_ratio.exp()
    loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip_coef, 1 + clip_coef)).mean()
    approx_kl = ((ratio - 1) - log_ratio).mean()
    return loss, approx_kl


def value_loss(critic, obs, a_base, ret):
    """0.5 E[(V(s, a_base) - R)^2] on a minibatch."""
    return 0.5 * ((critic(obs, a_base) - ret) ** 2).mean()


def residual_loss(residual, obs, a_base, u, old_logp, adv, clip_coef, l1, l2):
    """L_RL of the residual on a minibatch (PPO clip, the rollout's log-probs as old) plus the penalty on its mean:
    (L_RL + penalty, L_RL, approx_kl)."""
    r_mean = residual.mean(obs, a_base)
    new_logp = torch.distributions.Normal(r_mean, residual.log_std.exp(), validate_args=False).log_prob(u).sum(-1)
    pg_loss, kl = ppo_loss(new_logp, old_logp, adv, clip_coef)
    return pg_loss + residual_penalty(r_mean, l1, l2), pg_loss, kl


def gae(rewards, values, next_values, dones, gamma, lam):
    """GAE over (T, N) arrays; next_values already hold V(s_{t+1}) (0 after a termination, V(final obs) after
    a truncation); dones cut the recursion at episode ends. Returns (advantages, returns)."""
    adv, last = rewards * 0.0, rewards[0] * 0.0
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * next_values[t] - values[t]
        last = delta + gamma * lam * (1.0 - dones[t]) * last
        adv[t] = last
    return adv, adv + values


def flat_grad(loss, params):
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def grad_cosine(g_a: torch.Tensor, g_b: torch.Tensor) -> float:
    """cos(g_a, g_b) in [-1, 1]."""
    return float(torch.dot(g_a, g_b) / (g_a.norm() * g_b.norm() + 1e-12))


def measure_rho(l_il: torch.Tensor, l_rl: torch.Tensor, params) -> float:
    """rho(t) = cos(grad L_IL, grad L_RL) on `params`; > 0 aligned, < 0 conflict (both losses are minimised)."""
    return grad_cosine(flat_grad(l_il, params), flat_grad(l_rl, params))


def dynamic_m(m: int, rho_bar: float, m_min: int, m_max: int) -> int:
    """m(t) = clip(round(m * 3^(-rho_bar)), m_min, m_max): conflict (rho < 0) -> more RL steps per IL step."""
    return int(np.clip(round(m * 3.0 ** (-rho_bar)), m_min, m_max))


def gradient_step(loss, params, opt, max_grad_norm):
    """One clipped gradient step of `opt` on `loss`."""
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(params, max_grad_norm)
    opt.step()


def il_step(l_il, params, il_opt, max_grad_norm):
    """theta <- theta - alpha_IL grad L_IL, by the IL optimizer (its own Adam state: no RL momentum in it)."""
    gradient_step(l_il, params, il_opt, max_grad_norm)


def rl_step(l_rl, params, rl_opt, max_grad_norm):
    """theta_res <- theta_res - alpha_RL grad L_RL, by the RL optimizer (its own Adam state); the base stays."""
    gradient_step(l_rl, params, rl_opt, max_grad_norm)


def main():
    args = tyro.cli(Args)
    if args.il_mode != "interleave" and args.dynamic_m:
        raise SystemExit("--dynamic-m needs --il-mode interleave.")
    if args.m < 1 or not 1 <= args.m_min <= args.m_max:
        raise SystemExit(f"--m, --m-min, --m-max must satisfy m >= 1 and 1 <= m_min <= m_max (got {args.m}, "
                         f"{args.m_min}, {args.m_max}); use --il-mode none for RL-only fine-tuning.")
    if args.sparse_reward and not args.env_id.startswith("metaworld/"):
        raise SystemExit("--sparse-reward needs a MetaWorld env (metaworld/<task>-v3), whose steps flag success.")
    if args.residual_scale <= 0 or args.residual_l1 < 0 or args.residual_l2 < 0:
        raise SystemExit(f"--residual-scale must be positive and --residual-l1/--residual-l2 non-negative (got "
                         f"{args.residual_scale}, {args.residual_l1}, {args.residual_l2}).")
    run_name = f"{args.env_id.replace('/', '_')}__{args.exp_name}__{args.il_mode}__{args.seed}__{int(time.time())}"
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    tensor = lambda x: torch.as_tensor(x, dtype=torch.float32, device=device)
    k, scale = args.chunk_size, args.residual_scale
    interleave, regularize = args.il_mode == "interleave", args.il_mode == "regularize"

    # ---- env and demos ----
    def train_env(i):  # make_env, then the sparse reward and the action chunks
        env = make_env(args.env_id, args.seed + i)()
        env = SuccessReward(env) if args.sparse_reward else env
        return ChunkedActions(env, k) if k > 1 else env

    envs = gym.vector.SyncVectorEnv([lambda i=i: train_env(i) for i in range(args.num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    demo_path = args.demo_path or default_demo_path(args.env_id)
    demos = first_episodes(load_demos(demo_path, make_env(args.env_id, args.seed)()), args.num_demo_episodes)
    obs_dim, act_dim = demos["observations"].shape[1], demos["actions"].shape[1] * k
    obs_mean, obs_std = demos["observations"].mean(0), demos["observations"].std(0) + 1e-3
    D_obs = torch.as_tensor(demos["observations"], device=device)
    D_act = torch.as_tensor(chunk_targets(demos, k), device=device)
    log = Logger(run_name, args)

    def demo_batch(n):
        idx = torch.randint(len(D_obs), (n,), device=device)
        return D_obs[idx], D_act[idx]

    base = BasePolicy(obs_dim, act_dim, obs_mean, obs_std).to(device)
    residual = Residual(obs_dim, act_dim, obs_mean, obs_std, args.residual_log_std).to(device)
    critic = Critic(obs_dim, act_dim, obs_mean, obs_std).to(device)
    base_params, res_params = list(base.parameters()), list(residual.parameters())
    critic_params = list(critic.parameters())

    # ---- Stage 1: behaviour cloning of the base until the loss plateaus ----
    bc_opt = torch.optim.Adam(base.parameters(), lr=args.bc_lr)
    best, since, window = float("inf"), 0, []
    for step in log.steps(bar := tqdm(range(args.bc_steps), desc="stage 1: BC", leave=False)):  # stops on SIGINT
        obs_d, act_d = demo_batch(args.bc_batch_size)
        loss = squared_error(base(obs_d), act_d)
        bc_opt.zero_grad()
        loss.backward()
        bc_opt.step()
        window.append(loss.item())
        if (step + 1) % 500 == 0:
            mean_loss, window = float(np.mean(window)), []
            log.log(step + 1, **{"losses/bc_pretrain_mse": mean_loss})
            bar.set_postfix(mse=f"{mean_loss:.4f}")
            since = 0 if mean_loss < 0.97 * best else since + 1
            best = min(best, mean_loss)
            if since >= 4:  # no 3% improvement over 2,000 steps: plateau
                break

    def eval_fn(o):  # deterministic, the first action of the chunk (closed loop)
        with torch.no_grad():
            return act_combined(base, residual, tensor(o), scale).cpu().numpy()[: act_dim // k]

    bc_return, bc_success = evaluate(eval_fn, args.env_id, args.eval_episodes, 10_000 + args.seed)
    n_eps = int(np.logical_or(demos["terminations"], demos["truncations"]).sum())
    print(f"stage 1: BC on {demo_path} ({n_eps} demo episodes, {len(D_obs)} transitions) -> eval/return "
          f"{bc_return:.1f}, eval/success {bc_success:.2f}")
    log.log(0, **{"eval/return": bc_return, "eval/success": bc_success})

    # ---- Stage 2: residual PPO; one IL step on the base after every m(t) RL steps on the residual ----
    rl_opt = torch.optim.Adam(res_params, lr=args.actor_lr, eps=1e-5)  # alpha_RL, its own Adam state
    il_opt = torch.optim.Adam(base_params, lr=args.il_lr, eps=1e-5)  # alpha_IL, its own Adam state
    critic_opt = torch.optim.Adam(critic_params, lr=args.critic_lr, eps=1e-5)
    N, T = args.num_envs, args.num_steps
    batch, mb = N * T, N * T // args.num_minibatches
    buf = {k_: torch.zeros((T, N) + s, device=device) for k_, s in (("obs", (obs_dim,)), ("a_base", (act_dim,)),
           ("u", (act_dim,)), ("logp", ()), ("rew", ()), ("val", ()), ("done", ()), ("next_val", ()))}
    scale_reward = RewardScaler(N, args.gamma)
    obs, _ = envs.reset(seed=args.seed)
    compiled = torch.compile if args.compile else (lambda f: f)  # the same functions, compiled on first use
    value_loss_fn, residual_loss_fn = compiled(value_loss), compiled(residual_loss)
    global_step, rl_steps, next_eval = 0, 0, args.eval_every
    since_il = 0  # RL steps since the last IL step
    m_t = args.m  # m(t): RL steps per IL step in the current cycle
    rho_bar = 0.0  # EMA of rho(t), one update per cycle
    num_iters = max(1, args.total_timesteps // (batch * k))
    pbar = tqdm(total=num_iters * batch * k, desc=f"stage 2: {args.il_mode}")
    for it in log.steps(range(num_iters)):  # stops early on SIGINT/SIGTERM (Logger)
        for t in range(T):  # ---- rollout ----
            o = tensor(obs)
            with torch.no_grad():
                a_base = base(o)
                d = residual.dist(o, a_base)
                u = d.sample()
                buf["logp"][t], buf["val"][t] = d.log_prob(u).sum(-1), critic(o, a_base)
            obs, r, term, trunc, info = envs.step((a_base + scale * u).cpu().numpy())
            global_step += N * k
            pbar.update(N * k)
            ended = np.logical_or(term, trunc)
            buf["next_val"][t] = 0.0  # V(s_t+1) where an episode ended at t; elsewhere it is val[t + 1] (below)
            if ended.any():
                log_episodes(log, global_step, info["final_info"], ended)
                with torch.no_grad():  # bootstrap through truncations, not through terminations
                    final, not_term = tensor(np.stack(info["final_obs"][ended])), tensor(1.0 - term[ended])
                    buf["next_val"][t, torch.as_tensor(ended, device=device)] = critic(final, base(final)) * not_term
            buf["obs"][t], buf["a_base"][t], buf["u"][t], buf["done"][t] = o, a_base, u, tensor(ended)
            buf["rew"][t] = tensor(scale_reward(r, ended))
            if global_step >= next_eval:
                next_eval += args.eval_every
                ret, succ = evaluate(eval_fn, args.env_id, args.eval_episodes, 10_000 + args.seed)
                log.log(global_step, **{"eval/return": ret, "eval/success": succ})
                pbar.set_postfix(eval_return=f"{ret:.0f}", eval_success=f"{succ:.2f}", m=m_t)

        # ---- update: PPO minibatches (RL steps on the residual), one IL step on the base after every m(t) ----
        with torch.no_grad():  # V(s_t+1) of a running episode is the value of the next rollout step: no extra forward
            o_last = tensor(obs)
            v_last = critic(o_last, base(o_last))
            next_val = torch.cat([buf["val"][1:], v_last[None]]) * (1 - buf["done"]) + buf["next_val"]
        adv, ret = gae(buf["rew"], buf["val"], next_val, buf["done"], args.gamma, args.gae_lambda)
        b = {k_: v.reshape((batch,) + v.shape[2:]) for k_, v in buf.items()}
        b_adv, b_ret = adv.reshape(-1), ret.reshape(-1)

        def base_rl_loss(idx):
            """L_RL of the combined policy on RL minibatch idx, differentiable in the base (only for rho)."""
            a_exec = b["a_base"][idx] + scale * b["u"][idx]
            old_logp = b["logp"][idx] - act_dim * float(np.log(scale))  # the same density, in action units
            new_logp = combined_logp(base, residual, b["obs"][idx], a_exec, scale)
            return ppo_loss(new_logp, old_logp, b_adv[idx], args.clip_coef)

        kls, pg_losses, rhos, il_losses, il_mses = [], [], [], [], []  # this rollout's diagnostics
        for _epoch in range(args.update_epochs):
            for idx in torch.randperm(batch, device=device).split(mb):
                v_loss = value_loss_fn(critic, b["obs"][idx], b["a_base"][idx], b_ret[idx])
                gradient_step(v_loss, critic_params, critic_opt, args.max_grad_norm)
                if it < args.critic_warmup_iters:  # value-only rollouts: no RL and no IL steps
                    continue
                l_rl, pg_loss, kl = residual_loss_fn(residual, b["obs"][idx], b["a_base"][idx], b["u"][idx],
                                                     b["logp"][idx], b_adv[idx], args.clip_coef, args.residual_l1,
                                                     args.residual_l2)
                kls.append(kl.detach())  # no host sync per minibatch: read once per epoch and at logging
                pg_losses.append(pg_loss.detach())
                if regularize:  # baseline: BC of the combined action, into the residual only
                    obs_d, act_d = demo_batch(args.il_batch_size)
                    with torch.no_grad():
                        a_b = base(obs_d)
                    l_rl = l_rl + args.bc_coef * 0.5 * squared_error(a_b + scale * residual.mean(obs_d, a_b), act_d)
                rl_step(l_rl, res_params, rl_opt, args.max_grad_norm)
                rl_steps += 1
                since_il += 1
                if interleave and since_il >= m_t:  # the cycle's IL step
                    obs_d, act_d = demo_batch(args.il_batch_size)
                    l_il = il_loss(base, obs_d, act_d)
                    rho = measure_rho(l_il, base_rl_loss(idx)[0], base_params)
                    rho_bar = 0.9 * rho_bar + 0.1 * rho
                    il_step(l_il, base_params, il_opt, args.max_grad_norm)
                    since_il = 0
                    if args.dynamic_m:
                        m_t = dynamic_m(args.m, rho_bar, args.m_min, args.m_max)
                    rhos.append(rho)
                    il_losses.append(l_il.item())
                    il_mses.append(squared_error(base(obs_d), act_d).item())
            if kls and torch.stack(kls[-args.num_minibatches:]).mean().item() > args.target_kl:
                break
        with torch.no_grad():
            obs_d, act_d = demo_batch(1024)
            demo_mse = squared_error(act_combined(base, residual, obs_d, scale), act_d).item()
            r_mean = residual.mean(b["obs"], b["a_base"])
            scalars = {"losses/value": v_loss.item(), "losses/demo_mse": demo_mse,
                       "charts/action_std": scale * residual.log_std.exp().mean().item(), "charts/rl_steps": rl_steps,
                       "charts/residual_magnitude": (scale * r_mean).abs().mean().item(),
                       "losses/residual_penalty": residual_penalty(r_mean, args.residual_l1, args.residual_l2).item()}
        if pg_losses:
            scalars.update({"losses/policy": torch.stack(pg_losses).mean().item(),
                            "losses/approx_kl": torch.stack(kls).mean().item()})
        if interleave:
            scalars["charts/m"] = m_t
        if rhos:  # one entry per IL step
            scalars.update({"losses/il": float(np.mean(il_losses)), "losses/il_mse": float(np.mean(il_mses)),
                            "charts/rho": float(np.mean(rhos)), "charts/rho_bar": rho_bar})
        log.log(global_step, **scalars)
    pbar.close()

    final_return, final_success = evaluate(eval_fn, args.env_id, args.eval_episodes, 10_000 + args.seed)
    log.log(global_step, **{"eval/return": final_return, "eval/success": final_success})
    model_path = os.path.join(log.dir, "model.pt")
    torch.save({"base": base.state_dict(), "residual": residual.state_dict(), "critic": critic.state_dict(),
                "residual_scale": scale, "args": vars(args),
                "interrupted": log.interrupted, "step": log.step}, model_path)
    log.close()
    print(f"BC start {bc_return:.1f} (success {bc_success:.2f}) -> final eval/return {final_return:.1f} "
          f"(success {final_success:.2f}) after {global_step} env steps")
    print(f"model: {model_path}; metrics: {os.path.join(log.dir, 'metrics.csv')} "
          "(TensorBoard: tensorboard --logdir runs)")
    envs.close()
    return log.exit_code


if __name__ == "__main__":
    sys.exit(main())

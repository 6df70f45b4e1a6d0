"""ASAP: a delta action model that aligns the simulator with "real" dynamics, then policy fine-tuning in it.

Paper: He et al. 2025, "ASAP: Aligning Simulation and Real-World Physics for Learning Agile Humanoid Whole-Body
Skills", arXiv 2502.01143; official code LeCAR-Lab/ASAP (read, not copied). Here the robot is a MuJoCo hopper
and "real" is the same robot with physics the user changes by flags (sim-to-sim, as the paper's IsaacGym ->
IsaacSim / Genesis experiments).

Pipeline (Sec. III) -> code
    Stage 1, pre-training: the shipped sim expert (data/<env>-expert-policy.npz).
    Stage 2, real rollouts: deploy it in "real", record (q_t, qdot_t, a_t) trajectories     -> collect_real()
    Stage 3, delta action model (Sec. III-B): s_{t+1} = f_sim(s_t, a_t + pi_delta(s_t, a_t)); pi_delta trained by
        PPO in sim, the sim reset to recorded real states, the recorded real actions replayed, reward
        r = -||s_{t+1}^sim - s_{t+1}^real||_W^2 - lambda ||delta||^2  (default, --delta-reward error)  -> track_reward()
        or the official form (--delta-reward official): exp-kernel tracking terms, action-rate -0.01,
        -0.1 (exp(||delta||) - 1)                                                           -> official_track_reward()
        over --delta-horizon steps from each reset; a fall never terminates, episodes only truncate -> DeltaTrackingEnv
    Stage 4, fine-tuning in the aligned sim: pi_delta frozen, the policy's action a becomes a + pi_delta(s, a)
        in sim, PPO from the pre-trained weights                                          -> AlignedSim, ppo()
    Stage 5, deploy in real                                                               -> evaluate() on the real env id
Baselines on the same code (--method): `direct` (no fine-tuning), `finetune-sim` (fine-tune in plain sim),
`sysid` (coordinate search over the physics scales on the same tracking error, repeated until a round changes
nothing, at least 4 rounds; then fine-tune in that sim)                                   -> sysid_search().
PPO's critic sees the same normalised inputs as its actor (fixed statistics: the shipped policy's for the
fine-tuning, the policy's observation statistics and unit scale for the real action for the delta model).

"Real" (PhysicsGap, a gymnasium wrapper that passes gymnasium's env checker): torso mass x --mass-scale,
friction x --friction-scale, actuator gear x --gear-scale, and --action-delay steps of delay. Default: torso
mass x 1.5, where the shipped Hopper expert drops from 3265 to 1063 (10 episodes, `--method direct`).

Run:
    python asap_delta.py --env-id Hopper-v4                                 # ASAP, default gap (torso mass x 1.5)
    python asap_delta.py --env-id Hopper-v4 --gear-scale 0.8 --mass-scale 1 --method sysid

Fidelity (official code: LeCAR-Lab/ASAP, humanoidverse/)
| design choice | paper / official value (source) | this file | why different |
|---|---|---|---|
| robot, "real" | Unitree G1; IsaacGym -> IsaacSim/Genesis, real robot | MuJoCo Hopper, "real" = changed mass / gear /
  friction / delay (PhysicsGap) | runs on a CPU; sim-to-sim as the paper's own checks |
| delta model inputs | sim obs + real action (envs/delta_a/delta_a_open_loop.py) | sim obs + real action to be applied
  next | - |
| falls in the delta env | never terminate (terminate_by_* False, config/env/delta_a_open_loop.yaml) | never
  terminate, only truncate | - |
| delta reward | exp-kernel tracking of body/joint pos and vel, action rate -0.01, -0.1 (exp(norm a) - 1)
  (config/rewards/motion_tracking/delta_a/reward_delta_a_openloop.yaml, README command) | default -state error - 0.1
  norm(delta)^2; --delta-reward official gives the official form mapped to the hopper (root z/pitch = body position,
  sigma 0.03; joints sigma 1) | a hopper has no body keypoints; the default is the simpler form the benchmark was
  first run with; the official form is offered, not benchmarked |
| episode horizon | max_episode_length_s=1.0 (README command) | --delta-horizon 10 steps = 0.08 s (Hopper dt 0.008);
  --delta-horizon 125 gives 1 s | the benchmark keeps the 10 steps it was first run with; 1 s is not benchmarked |
| delta critic | asymmetric: critic_obs adds the reference (real) body positions and their difference
  (config/obs/delta_a/open_loop.yaml) | the actor's observation, normalised | not added for lack of time; the real
  next state would be the hopper's reference |
| RL algorithm | PPO | PPO (GAE, clip 0.2, reward scaling) | - |
| SysID baseline | identify physical parameters (a baseline in the paper) | coordinate search of 3 scales on a
  13-point log grid, until a round changes nothing (>= 4 rounds) | the simplest search that finds a grid optimum of 3
  scales (test: recovers a known gear scale) |
| fine-tuning | policy trained in the sim with the frozen delta, then deployed | same, from the shipped expert's
  weights, --finetune-steps PPO steps | - |
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
    """the simulator: a gymnasium MuJoCo id (Hopper-v4, Walker2d-v4)"""
    policy_path: str = ""
    """the pre-trained sim policy; empty: data/<env-id>-expert-policy.npz next to this file"""
    method: Literal["asap", "direct", "finetune-sim", "sysid"] = "asap"
    """asap: delta action model; direct: no fine-tuning; finetune-sim: plain sim; sysid: fitted physics scales"""
    mass_scale: float = 1.5
    """real: torso mass scale"""
    friction_scale: float = 1.0
    """real: friction scale (all geoms)"""
    gear_scale: float = 1.0
    """real: actuator gear scale (motor strength)"""
    action_delay: int = 0
    """real: steps of action delay"""
    real_episodes: int = 10
    """real rollouts of the pre-trained policy used to fit the delta model / SysID"""
    heldout_episodes: int = 3
    """further real rollouts, held out, to measure open-loop tracking error"""
    real_noise: float = 0.1
    """std of Gaussian action noise in the real rollouts (covers more states)"""
    delta_horizon: int = 10
    """steps replayed from each reset to a real state"""
    delta_steps: int = 200_000
    """PPO env steps for the delta action model"""
    delta_penalty: float = 0.1
    """lambda: penalty on ||delta||^2 (--delta-reward error)"""
    delta_reward: Literal["error", "official"] = "error"
    """error: r = -||s - s_real||_W^2 - lambda ||delta||^2; official: the official code's form, exp-kernel tracking
    terms + action-rate -0.01 + -0.1 (exp(||delta||) - 1) (official_track_reward())"""
    delta_std: float = 0.1
    """initial std of the delta policy"""
    finetune_steps: int = 300_000
    """PPO env steps of policy fine-tuning"""
    finetune_std: float = 0.1
    """initial exploration std of the fine-tuned policy"""
    sysid_grid: int = 13
    """sysid: values per physics scale on a log grid over [0.5, 2]"""
    sysid_rounds: int = 10
    """sysid: at most this many rounds of coordinate search over (mass, friction, gear); it stops earlier, after
    at least 4 rounds, once a whole round leaves the scales unchanged (converged)"""
    num_envs: int = 8
    """parallel envs for PPO"""
    num_steps: int = 256
    """steps per env per PPO rollout"""
    lr: float = 3e-4
    """PPO learning rate"""
    gamma: float = 0.99
    """discount"""
    gae_lambda: float = 0.95
    """GAE lambda"""
    update_epochs: int = 10
    """PPO epochs"""
    num_minibatches: int = 8
    """PPO minibatches per epoch"""
    clip_coef: float = 0.2
    """PPO clip"""
    critic_warmup_iters: int = 5
    """rollouts at the start of fine-tuning that train only the value net"""
    eval_every: int = 50_000
    """env steps between evaluations (in real)"""
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


class PhysicsGap(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """'Real': the same robot with scaled torso mass, friction, actuator gear, and an action delay (steps)."""

    def __init__(self, env, mass_scale=1.0, friction_scale=1.0, gear_scale=1.0, action_delay=0):
        gym.utils.RecordConstructorArgs.__init__(self, mass_scale=mass_scale, friction_scale=friction_scale,
                                                 gear_scale=gear_scale, action_delay=action_delay)
        gym.Wrapper.__init__(self, env)
        m = env.unwrapped.model
        m.body_mass[1] *= mass_scale  # body 1 is the torso in the gymnasium MuJoCo locomotion models
        m.geom_friction[:, 0] *= friction_scale
        m.actuator_gear[:, 0] *= gear_scale
        self.delay, self.queue = action_delay, []

    def reset(self, **kwargs):
        self.queue = [np.zeros(self.action_space.shape, np.float32)] * self.delay
        return self.env.reset(**kwargs)

    def step(self, action):
        self.queue.append(np.asarray(action, np.float32))
        return self.env.step(self.queue.pop(0))


def register_real(args) -> str:
    """Register the 'real' env under its own id so that make_env / evaluate use it like any other."""
    real_id = f"asap/{args.env_id}-real"
    kw = dict(mass_scale=args.mass_scale, friction_scale=args.friction_scale, gear_scale=args.gear_scale,
              action_delay=args.action_delay)
    if real_id in gym.registry:
        del gym.registry[real_id]
    base = args.env_id
    gym.register(real_id, entry_point=lambda **k: PhysicsGap(gym.make(base), **k), kwargs=kw,
                 max_episode_steps=None)
    return real_id


def get_state(env):
    d = env.unwrapped.data
    return d.qpos.copy(), d.qvel.copy()


def collect_real(act_fn, real_env, episodes, noise, seed):
    """Roll the policy out in real: a list of dicts qpos (T+1, nq), qvel (T+1, nv), obs (T+1, o), act (T, a)."""
    rng, trajs = np.random.default_rng(seed), []
    for ep in range(episodes):
        obs, _ = real_env.reset(seed=seed + ep)
        qp, qv = get_state(real_env)
        t = {"qpos": [qp], "qvel": [qv], "obs": [obs], "act": []}
        done = False
        while not done:
            a = np.clip(act_fn(obs) + noise * rng.standard_normal(real_env.action_space.shape), -1, 1).astype(np.float32)
            obs, _, term, trunc, _ = real_env.step(a)
            qp, qv = get_state(real_env)
            for k, v in zip(("qpos", "qvel", "obs", "act"), (qp, qv, obs, a)):
                t[k].append(v)
            done = term or trunc
        trajs.append({k: np.array(v, np.float64 if k != "act" else np.float32) for k, v in t.items()})  # states exact
    return trajs


# ----------------------------------------------------------------------------------------------------------
# Tracking error and reward (pure functions; tests call them)
# ----------------------------------------------------------------------------------------------------------
def state_error(qpos, qvel, qpos_ref, qvel_ref, w_vel=0.1):
    """||s - s_ref||_W^2: squared error of all positions but the root's x (the tracking frame moves), plus
    w_vel x squared velocity error; works on (..., nq) arrays."""
    return ((qpos[..., 1:] - qpos_ref[..., 1:]) ** 2).sum(-1) + w_vel * ((qvel - qvel_ref) ** 2).sum(-1)


def track_reward(err, delta, lam):
    """r = -err - lambda ||delta||^2 (always <= 0; 0 only for perfect tracking with no correction)."""
    return -err - lam * float(np.sum(np.square(delta)))


def official_track_reward(qpos, qvel, qpos_ref, qvel_ref, delta, prev_delta):
    """The official delta-model reward (LeCAR-Lab/ASAP, reward_delta_a_openloop.yaml + README command) mapped to the
    hopper: exp-kernel tracking terms exp(-mean sq. error / sigma) on body position (root z and pitch, weight 1,
    sigma 0.03), body velocity (root, 0.5, 1), joint position (0.5, 1) and joint velocity (0.5, 1), the action-rate
    penalty -0.01 ||delta_t - delta_{t-1}||^2 and -0.1 (exp(||delta||) - 1). At most 2.5; 2.5 only for perfect
    tracking with no correction."""
    def kern(x, x_ref, sigma):
        return float(np.exp(-np.mean((x - x_ref) ** 2) / sigma))

    track = (1.0 * kern(qpos[1:3], qpos_ref[1:3], 0.03) + 0.5 * kern(qvel[:3], qvel_ref[:3], 1.0)
             + 0.5 * kern(qpos[3:], qpos_ref[3:], 1.0) + 0.5 * kern(qvel[3:], qvel_ref[3:], 1.0))
    return (track - 0.01 * float(np.sum(np.square(delta - prev_delta)))
            - 0.1 * (float(np.exp(np.linalg.norm(delta))) - 1.0))


class DeltaTrackingEnv(gym.Env):
    """Sim reset to recorded real states; the real actions are replayed with a correction delta added; the
    observation is (sim obs, real action to be applied next); reward track_reward() (or official_track_reward())
    against the next real state. As the official delta env (terminate_by_* off), a fall never terminates: an
    episode only truncates, after `horizon` steps or at the end of the recorded trajectory (every reward of the
    error form is <= 0, so a termination would pay the delta model to fall)."""

    def __init__(self, env_id, trajs, horizon, lam, seed=0, reward="error"):
        self.sim = gym.make(env_id).unwrapped
        self.trajs, self.horizon, self.lam, self.reward = trajs, horizon, lam, reward
        o, a = trajs[0]["obs"].shape[1], trajs[0]["act"].shape[1]
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (o + a,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (a,), np.float32)
        self.rng = np.random.default_rng(seed)

    def _obs(self):  # at the last recorded step there is no next real action: the last one stands in
        return np.concatenate([self.sim._get_obs(), self.traj["act"][min(self.t, len(self.traj["act"]) - 1)]])

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.traj = self.trajs[self.rng.integers(len(self.trajs))]
        self.t = self.t0 = int(self.rng.integers(len(self.traj["act"])))
        self.sim.reset(seed=int(self.rng.integers(2**31)))
        self.sim.set_state(self.traj["qpos"][self.t], self.traj["qvel"][self.t])
        self.prev_delta = np.zeros(self.action_space.shape)
        return self._obs(), {}

    def step(self, delta):
        delta = np.clip(delta, -1, 1)
        a = np.clip(self.traj["act"][self.t] + delta, -1, 1)
        self.sim.step(a)  # the sim's own termination (a fall) is ignored
        qp, qv = get_state(self.sim)
        self.t += 1
        qp_ref, qv_ref = self.traj["qpos"][self.t], self.traj["qvel"][self.t]
        err = float(state_error(qp, qv, qp_ref, qv_ref))
        r = (official_track_reward(qp, qv, qp_ref, qv_ref, delta, self.prev_delta) if self.reward == "official"
             else track_reward(err, delta, self.lam))
        self.prev_delta = delta
        trunc = self.t - self.t0 >= self.horizon or self.t >= len(self.traj["act"])
        return self._obs(), r, False, bool(trunc), {"tracking_error": err}


def open_loop_error(env_id, trajs, horizon, delta_fn=None, make=None, stride=5):
    """Mean state_error and mean |joint angle error| (rad) when the recorded real actions are replayed open loop
    in sim (optionally + delta_fn(obs, a), or in `make()`'s physics) for `horizon` steps from real states."""
    sim = (make() if make else gym.make(env_id)).unwrapped
    errs, angle = [], []
    for tr in trajs:
        for t0 in range(0, len(tr["act"]) - horizon, stride):
            sim.reset(seed=0)
            sim.set_state(tr["qpos"][t0], tr["qvel"][t0])
            for t in range(t0, t0 + horizon):
                a = tr["act"][t]
                if delta_fn is not None:
                    a = np.clip(a + delta_fn(sim._get_obs(), a), -1, 1)
                sim.step(a)
                qp, qv = get_state(sim)
                errs.append(state_error(qp, qv, tr["qpos"][t + 1], tr["qvel"][t + 1]))
                angle.append(np.abs(qp[2:] - tr["qpos"][t + 1][2:]).mean())
    return float(np.mean(errs)), float(np.mean(angle))


# ----------------------------------------------------------------------------------------------------------
# Networks and PPO
# ----------------------------------------------------------------------------------------------------------
class GaussianMLP(nn.Module):
    """Gaussian policy, 2 x 64 tanh mean net on normalised inputs, state-independent log std. Loads the shipped
    policy format (W0..b2, obs_mean, obs_var) when `init` is given."""

    def __init__(self, inp, out, std, mean=None, var=None, init=None, zero_last=False):
        super().__init__()
        self.register_buffer("mu_in", torch.as_tensor(np.zeros(inp) if mean is None else mean, dtype=torch.float32))
        self.register_buffer("sd_in", torch.as_tensor(np.ones(inp) if var is None else np.sqrt(var + 1e-8), dtype=torch.float32))
        self.net = nn.Sequential(nn.Linear(inp, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, out))
        if init is not None:
            with torch.no_grad():
                for i, layer in zip((0, 1, 2), (0, 2, 4)):
                    self.net[layer].weight.copy_(torch.as_tensor(init[f"W{i}"]).T)
                    self.net[layer].bias.copy_(torch.as_tensor(init[f"b{i}"]))
        if zero_last:
            nn.init.zeros_(self.net[4].weight)
            nn.init.zeros_(self.net[4].bias)
        self.log_std = nn.Parameter(torch.full((out,), float(np.log(std))))

    def mean(self, x):
        return self.net(((x - self.mu_in) / self.sd_in).clamp(-10, 10))

    def dist(self, x):
        return torch.distributions.Normal(self.mean(x), self.log_std.exp())

    forward = mean  # the critic (critic_net) is called as a module


class AlignedSim(gym.Wrapper):
    """Sim whose actions pass through the frozen delta model: a -> clip(a + pi_delta(s, a), -1, 1)."""

    def __init__(self, env, delta):
        super().__init__(env)
        self.delta, self.last_obs = delta, None

    def reset(self, **kwargs):
        self.last_obs, info = self.env.reset(**kwargs)
        return self.last_obs, info

    def step(self, action):
        a = np.clip(action, -1, 1).astype(np.float32)
        with torch.no_grad():
            d = self.delta.mean(torch.as_tensor(np.concatenate([self.last_obs, a]), dtype=torch.float32)).numpy()
        out = self.env.step(np.clip(a + np.clip(d, -1, 1), -1, 1))
        self.last_obs = out[0]
        return out


def ppo_loss(new_logp, old_logp, adv, clip_coef):
    """PPO's clipped surrogate, to be minimised; advantages normalised per minibatch. Returns (loss, approx_kl)."""
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    log_ratio = new_logp - old_logp
    ratio = log_ratio.exp()
    loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip_coef, 1 + clip_coef)).mean()
    return loss, ((ratio - 1) - log_ratio).mean()


def ppo(env_fns, actor, critic, total_steps, args, log, tag, on_eval=None, warmup_iters=0):
    """PPO (GAE, clipped ratio, value loss, reward scaling) on vectorised envs; trains actor and critic in place."""
    envs = gym.vector.SyncVectorEnv(env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    opt = torch.optim.Adam(list(actor.parameters()) + list(critic.parameters()), lr=args.lr, eps=1e-5)
    N, T = len(env_fns), args.num_steps
    batch, mb = N * T, N * T // args.num_minibatches
    keys = ("obs", "act", "logp", "rew", "val", "done", "next_val")
    obs, _ = envs.reset(seed=args.seed)
    ret_var, ret_mean, ret_count, disc, step, next_eval = 1.0, 0.0, 1e-4, np.zeros(N), 0, args.eval_every
    for it in log.steps(tqdm(range(max(1, total_steps // batch)), desc=tag)):  # stops on SIGINT/SIGTERM (Logger)
        buf = {k: [] for k in keys}
        for _ in range(T):
            o = torch.as_tensor(obs, dtype=torch.float32)
            with torch.no_grad():
                d = actor.dist(o)
                a = d.sample()
                buf["logp"].append(d.log_prob(a).sum(-1))
                buf["val"].append(critic(o).squeeze(-1))
            obs, r, term, trunc, info = envs.step(a.numpy())
            step, disc = step + N, disc * args.gamma + r
            bm, bv, tot = disc.mean(), disc.var(), ret_count + N
            ret_var = (ret_var * ret_count + bv * N + (bm - ret_mean) ** 2 * ret_count * N / tot) / tot
            ret_mean, ret_count = ret_mean + (bm - ret_mean) * N / tot, tot
            ended = np.logical_or(term, trunc)
            end_val = torch.zeros(N)  # V(s_t+1) where an episode ended at t (0 after a termination); else val[t + 1]
            if ended.any():
                disc[ended] = 0.0
                final = torch.as_tensor(np.stack(info["final_obs"][ended]), dtype=torch.float32)
                end_val[torch.as_tensor(ended)] = critic(final).detach().squeeze(-1) * torch.as_tensor(1.0 - term[ended]).float()
            buf["next_val"].append(end_val)
            buf["obs"].append(o)
            buf["act"].append(a)
            buf["rew"].append(torch.as_tensor(np.clip(r / np.sqrt(ret_var + 1e-8), -10, 10), dtype=torch.float32))
            buf["done"].append(torch.as_tensor(ended, dtype=torch.float32))
            if on_eval is not None and step >= next_eval:
                next_eval += args.eval_every
                on_eval(step)
        b = {k: torch.stack(v) for k, v in buf.items()}
        with torch.no_grad():  # V(s_t+1) of a running episode is the next rollout step's value: no extra forward
            last_val = critic(torch.as_tensor(obs, dtype=torch.float32)).squeeze(-1)
        b["next_val"] = torch.cat([b["val"][1:], last_val[None]]) * (1 - b["done"]) + b["next_val"]
        adv, last = torch.zeros_like(b["rew"]), torch.zeros(N)  # GAE; episode ends cut the recursion
        for t in reversed(range(T)):
            delta_t = b["rew"][t] + args.gamma * b["next_val"][t] - b["val"][t]
            last = delta_t + args.gamma * args.gae_lambda * (1 - b["done"][t]) * last
            adv[t] = last
        ret = adv + b["val"]
        flat = {k: v.reshape((batch,) + v.shape[2:]) for k, v in b.items()}
        flat["adv"], flat["ret"] = adv.reshape(-1), ret.reshape(-1)
        for _ in range(args.update_epochs):
            perm = torch.randperm(batch)
            for s in range(0, batch, mb):
                i = perm[s:s + mb]
                v_loss = 0.5 * ((critic(flat["obs"][i]).squeeze(-1) - flat["ret"][i]) ** 2).mean()
                loss = v_loss
                if it >= warmup_iters:
                    pg, kl = ppo_loss(actor.dist(flat["obs"][i]).log_prob(flat["act"][i]).sum(-1), flat["logp"][i],
                                      flat["adv"][i], args.clip_coef)
                    loss = loss + pg
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(list(actor.parameters()) + list(critic.parameters()), 0.5)
                opt.step()
        log.log(step, **{f"losses/{tag}_value": v_loss.item(), f"charts/{tag}_reward": float(b["rew"].mean()),
                         f"charts/{tag}_std": actor.log_std.exp().mean().item()})
    envs.close()


def evaluate_in(make, act_fn, episodes, seed):
    """Mean return of act_fn in the env `make()` builds (the sim a method fine-tunes in), episodes as evaluate()."""
    env, rets = make(), []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, ret = False, 0.0
        while not done:
            obs, r, term, trunc, _ = env.step(act_fn(obs))
            ret, done = ret + float(r), term or trunc
        rets.append(ret)
    return float(np.mean(rets))


def critic_net(inp, mean=None, var=None):
    """V(s): GaussianMLP's 2 x 64 tanh net with one output on inputs normalised by (mean, var); log std unused."""
    v = GaussianMLP(inp, 1, 1.0, mean, var)
    v.log_std.requires_grad_(False)
    return v


def sysid_search(env_id, trajs, horizon, grid_n, max_rounds, min_rounds=4, steps=lambda it: it):
    """SysID baseline: coordinate search of (mass, friction, gear) scales on a log grid over [0.5, 2] that
    minimises the open-loop tracking error on `trajs`; rounds repeat until one leaves the scales unchanged (at
    least `min_rounds`, at most `max_rounds`). Returns (scales, rounds run, converged)."""
    scales, grid = [1.0, 1.0, 1.0], np.exp(np.linspace(np.log(0.5), np.log(2.0), grid_n))
    rounds, converged = 0, False
    for rounds in steps(range(1, max_rounds + 1)):
        before = list(scales)
        for j in range(3):  # mass, friction, gear: scan one on the log grid, the others held
            trials = [scales[:j] + [g] + scales[j + 1:] for g in grid]
            errs = [open_loop_error(env_id, trajs, horizon, stride=10,
                                    make=lambda s=s: PhysicsGap(gym.make(env_id), *s))[0] for s in trials]
            scales = trials[int(np.argmin(errs))]
        if scales == before and rounds >= min_rounds:
            converged = True
            break
    return [float(x) for x in scales], rounds, converged


def main():
    args = tyro.cli(Args)
    run_name = f"{args.env_id}__{args.exp_name}__{args.method}__{args.seed}__{int(time.time())}"
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.threads)
    make_env(args.env_id, args.seed)()  # one clear sentence for an unknown id
    policy_path = args.policy_path or os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", f"{args.env_id}-expert-policy.npz")
    policy_act = load_policy(policy_path)
    p = dict(np.load(policy_path))
    if p["W0"].shape[0] != gym.make(args.env_id).observation_space.shape[0]:
        raise SystemExit(f"Policy file {policy_path} takes observations of size {p['W0'].shape[0]}, but {args.env_id} "
                         f"has {gym.make(args.env_id).observation_space.shape[0]}: pass --policy-path made for this env.")
    real_id = register_real(args)
    log = Logger(run_name, args)
    eval_seed = 10_000 + args.seed

    # ---- direct transfer ----
    sim_ret, _ = evaluate(policy_act, args.env_id, args.eval_episodes, eval_seed)
    real_ret, _ = evaluate(policy_act, real_id, args.eval_episodes, eval_seed)
    print(f"pre-trained policy: sim return {sim_ret:.0f}, real return {real_ret:.0f} (direct transfer)")
    log.log(0, **{"eval/return": real_ret, "eval/sim_return": sim_ret})
    obs_dim, act_dim = p["W0"].shape[0], p["W2"].shape[1]
    actor = GaussianMLP(obs_dim, act_dim, args.finetune_std, p["obs_mean"], p["obs_var"], init=p)
    saved = {"args": vars(args), "direct_real_return": real_ret}

    if args.method != "direct":
        trajs = collect_real(policy_act, make_env(real_id, args.seed)(), args.real_episodes + args.heldout_episodes,
                             args.real_noise, args.seed + 20_000)
        train, held = trajs[: args.real_episodes], trajs[args.real_episodes:]
        print(f"real rollouts: {sum(len(t['act']) for t in train)} train / {sum(len(t['act']) for t in held)} held-out steps")
        err, ang = open_loop_error(args.env_id, held, args.delta_horizon)
        log.log(0, **{"tracking/sim_error": err, "tracking/sim_angle_error": ang})
        print(f"open-loop tracking on held-out real data, {args.delta_horizon} steps: sim error {err:.4f}, joint angle {ang:.4f} rad")
        sim_fn = lambda i: (lambda: make_env(args.env_id, args.seed + i)())  # noqa: E731

        if args.method == "asap":  # stage 3: the delta action model
            delta = GaussianMLP(obs_dim + act_dim, act_dim, args.delta_std, zero_last=True)
            mean = np.concatenate([p["obs_mean"], np.zeros(act_dim, np.float32)])
            var = np.concatenate([p["obs_var"], np.ones(act_dim, np.float32)])
            delta.mu_in.copy_(torch.as_tensor(mean))
            delta.sd_in.copy_(torch.as_tensor(np.sqrt(var + 1e-8)))
            fns = [lambda i=i: DeltaTrackingEnv(args.env_id, train, args.delta_horizon, args.delta_penalty, args.seed + i,
                                                reward=args.delta_reward) for i in range(args.num_envs)]
            ppo(fns, delta, critic_net(obs_dim + act_dim, mean, var), args.delta_steps, args, log, "delta")
            delta.log_std.requires_grad_(False)

            def delta_fn(o, a):
                with torch.no_grad():
                    return delta.mean(torch.as_tensor(np.concatenate([o, a]), dtype=torch.float32)).numpy()

            err_d, ang_d = open_loop_error(args.env_id, held, args.delta_horizon, delta_fn=delta_fn)
            log.log(args.delta_steps, **{"tracking/sim_delta_error": err_d, "tracking/sim_delta_angle_error": ang_d})
            print(f"with the delta model: error {err_d:.4f} (was {err:.4f}), joint angle {ang_d:.4f} rad (was {ang:.4f})")
            sim_fn = lambda i: (lambda: AlignedSim(make_env(args.env_id, args.seed + i)(), delta))  # noqa: E731
            saved["delta"] = delta.state_dict()
        elif args.method == "sysid":  # baseline: coordinate search of the physics scales on the same tracking error
            scales, rounds, converged = sysid_search(args.env_id, train, args.delta_horizon, args.sysid_grid,
                                                     args.sysid_rounds, steps=lambda r: log.steps(tqdm(r, desc="sysid")))
            if not converged:
                print(f"sysid: scales still changing after {rounds} rounds (--sysid-rounds {args.sysid_rounds})")
            err_s, ang_s = open_loop_error(args.env_id, held, args.delta_horizon, make=lambda: PhysicsGap(gym.make(args.env_id), *scales))
            log.log(0, **{"tracking/sysid_error": err_s, "tracking/sysid_angle_error": ang_s, "sysid/mass_scale": scales[0],
                          "sysid/friction_scale": scales[1], "sysid/gear_scale": scales[2],
                          "sysid/rounds": rounds, "sysid/converged": float(converged)})
            print(f"sysid: mass x{scales[0]:.2f}, friction x{scales[1]:.2f}, gear x{scales[2]:.2f}; held-out error {err_s:.4f}")
            sim_fn = lambda i: (lambda: gym.wrappers.RecordEpisodeStatistics(PhysicsGap(gym.make(args.env_id), *scales)))  # noqa: E731
            saved["sysid_scales"] = scales

        # alignment check: the pre-trained policy's return in the sim it will be fine-tuned in (real: real_ret)
        train_sim_ret = evaluate_in(sim_fn(0), policy_act, args.eval_episodes, eval_seed)
        log.log(0, **{"eval/train_sim_return": train_sim_ret})
        print(f"pre-trained policy in the fine-tuning sim ({args.method}): {train_sim_ret:.0f} (real {real_ret:.0f}, sim {sim_ret:.0f})")

        # ---- stage 4: fine-tune the policy in the (aligned) sim, evaluating in real ----
        def act_det(o):
            with torch.no_grad():
                return np.clip(actor.mean(torch.as_tensor(o, dtype=torch.float32)).numpy(), -1, 1)

        def on_eval(step):
            r, _ = evaluate(act_det, real_id, args.eval_episodes, eval_seed)
            log.log(step, **{"eval/return": r})

        ppo([sim_fn(i) for i in range(args.num_envs)], actor, critic_net(obs_dim, p["obs_mean"], p["obs_var"]),
            args.finetune_steps, args, log, "finetune",
            on_eval=on_eval, warmup_iters=args.critic_warmup_iters)
        real_ret, _ = evaluate(act_det, real_id, args.eval_episodes, eval_seed)
        sim_ret, _ = evaluate(act_det, args.env_id, args.eval_episodes, eval_seed)
        log.log(args.finetune_steps, **{"eval/return": real_ret, "eval/sim_return": sim_ret})
        print(f"after fine-tuning ({args.method}): real return {real_ret:.0f}, sim return {sim_ret:.0f}")

    saved.update({"actor": actor.state_dict(), "final_real_return": real_ret})
    model_path = os.path.join(log.dir, "model.pt")
    torch.save(saved | {"interrupted": log.interrupted, "step": log.step}, model_path)
    log.close()
    print(f"model: {model_path}; metrics: {os.path.join(log.dir, 'metrics.csv')} (TensorBoard: tensorboard --logdir runs)")
    return log.exit_code


if __name__ == "__main__":
    sys.exit(main())

"""ASAP: a delta action model aligns the simulator with "real" dynamics; the policy is fine-tuned in the aligned sim.

Paper: He et al. 2025, "ASAP: Aligning Simulation and Real-World Physics for Learning Agile Humanoid Whole-Body
Skills", arXiv 2502.01143; official code LeCAR-Lab/ASAP (read, not copied). Robot: a MuJoCo hopper; "real": the same
robot with torso mass, friction, gear or action delay changed by flags (sim-to-sim, as the paper's IsaacGym -> IsaacSim
/ Genesis checks) -> PhysicsGap(). Default gap: torso mass x 1.5 (the shipped expert: 3265 in sim, 1063 in real).
Unmodelled dynamics (gaps NOT official, off by default), the paper's case of a gap that no tuning of physical
parameters closes: an actuator whose output is a nonlinear f(a), a dead zone then a saturation (--dead-zone,
--saturation), and a motor that follows its command with a lag, a first-order low-pass filter (--action-lowpass).
pi_delta(s, a) = f(a) - a reproduces f exactly; the filter's state (the last applied action) it sees only through the
velocities. SysID still searches only mass / friction / gear, a family with no point that reproduces either.

Pipeline (Sec. III) -> code
    Stage 1, pre-training: the shipped sim expert (data/<env>-expert-policy.npz)          -> load_policy()
    Stage 2, real rollouts of it, recording (q_t, qdot_t, a_t)                             -> collect_real()
    Stage 3, delta action model (Sec. III-B): s_{t+1} = f_sim(s_t, a_t + pi_delta(s_t, a_t)) with the sim reset to
        recorded real states and the real actions replayed; a fall never terminates     -> DeltaTrackingEnv()
        reward r = -||s_{t+1}^sim - s_{t+1}^real||_W^2 - lambda ||delta||^2 (default)  -> state_error(), track_reward()
        or the official form (--delta-reward official)                                   -> official_track_reward()
        pi_delta trained by PPO (critic on normalised inputs) -> ppo(), ppo_loss(), gae(), RewardScaler(), critic_net()
    Stage 4, fine-tuning in the aligned sim: pi_delta frozen, each action a becomes
        a + pi_delta(s, a) in sim; PPO from the pre-trained weights                      -> AlignedSim()
    Stage 5, deploy: evaluation in real                                                  -> evaluate()
Baselines (--method): direct (no fine-tuning), finetune-sim (fine-tune in the plain sim), sysid (coordinate search of
mass / friction / gear scales on the same tracking error; fine-tune in that sim)    -> sysid_baseline(), sysid_search()
Run:
    python asap_delta.py --env-id Hopper-v4                                 # ASAP, default gap (torso mass x 1.5)
    python asap_delta.py --env-id Hopper-v4 --gear-scale 0.8 --mass-scale 1 --method sysid
    python asap_delta.py --env-id Hopper-v4 --mass-scale 1 --dead-zone 0.2    # unmodelled actuator (expert: ~640)
Fidelity to the official code: the table at the end of this file.
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
    exp_name: str = os.path.basename(__file__)[: -len(".py")]  # the name of this experiment
    seed: int = 1  # seed of the experiment
    torch_deterministic: bool = True  # torch.backends.cudnn.deterministic
    threads: int = 1  # torch CPU threads
    env_id: str = "Hopper-v4"  # the simulator: a gymnasium MuJoCo id (Hopper-v4, Walker2d-v4)
    policy_path: str = ""  # the pre-trained sim policy; empty: data/<env-id>-expert-policy.npz next to this file
    method: Literal["asap", "direct", "finetune-sim", "sysid"] = "asap"  # ASAP, or a baseline (see the docstring)
    mass_scale: float = 1.5  # real: torso mass scale
    friction_scale: float = 1.0  # real: friction scale (all geoms)
    gear_scale: float = 1.0  # real: actuator gear scale (motor strength)
    action_delay: int = 0  # real: steps of action delay
    dead_zone: float = 0.0  # real, NOT official (unmodelled by SysID): actuator dead zone in action units, [0, 1)
    saturation: float = 1.0  # real, NOT official (unmodelled by SysID): actuator saturation |u| <= this, (0, 1]
    action_lowpass: float = 0.0  # real, NOT official (unmodelled by SysID): low-pass filter coefficient, [0, 1)
    real_episodes: int = 10  # real rollouts of the pre-trained policy used to fit the delta model / SysID
    heldout_episodes: int = 3  # further real rollouts, held out, to measure open-loop tracking error
    real_noise: float = 0.1  # std of Gaussian action noise in the real rollouts (covers more states)
    delta_horizon: int = 10  # steps replayed from each reset to a real state
    delta_steps: int = 200_000  # PPO env steps for the delta action model
    delta_penalty: float = 0.1  # lambda: penalty on ||delta||^2 (--delta-reward error)
    delta_reward: Literal["error", "official"] = "error"  # error: track_reward(); official: official_track_reward()
    delta_std: float = 0.1  # initial std of the delta policy
    finetune_steps: int = 300_000  # PPO env steps of policy fine-tuning
    finetune_std: float = 0.1  # initial exploration std of the fine-tuned policy
    sysid_grid: int = 13  # sysid: values per physics scale on a log grid over [0.5, 2]
    sysid_rounds: int = 10  # sysid: at most this many search rounds (at least 4, then until one changes nothing)
    num_envs: int = 8  # parallel envs for PPO
    num_steps: int = 256  # steps per env per PPO rollout
    lr: float = 3e-4  # PPO learning rate
    gamma: float = 0.99  # discount
    gae_lambda: float = 0.95  # GAE lambda
    update_epochs: int = 10  # PPO epochs
    num_minibatches: int = 8  # PPO minibatches per epoch
    clip_coef: float = 0.2  # PPO clip
    critic_warmup_iters: int = 5  # rollouts at the start of fine-tuning that train only the value net
    eval_every: int = 50_000  # env steps between evaluations (in real)
    eval_episodes: int = 5  # deterministic evaluation episodes


class GaussianMLP(nn.Module):
    """Gaussian policy: 2 x 64 tanh mean net on normalised inputs, state-independent log std; `init`: shipped net."""

    def __init__(self, inp, out, std, mean=None, var=None, init=None, zero_last=False):
        super().__init__()
        self.register_buffer("mu_in", torch.as_tensor(np.zeros(inp) if mean is None else mean, dtype=torch.float32))
        self.register_buffer("sd_in", torch.as_tensor(np.ones(inp) if var is None else np.sqrt(var + 1e-8),
                                                      dtype=torch.float32))
        self.net = nn.Sequential(nn.Linear(inp, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, out))
        if init is not None:
            with torch.no_grad():
                for i, layer in zip((0, 1, 2), (0, 2, 4)):
                    self.net[layer].weight.copy_(torch.as_tensor(init[f"W{i}"]).T)
                    self.net[layer].bias.copy_(torch.as_tensor(init[f"b{i}"]))
        if zero_last:  # the delta model starts as no correction
            nn.init.zeros_(self.net[4].weight)
            nn.init.zeros_(self.net[4].bias)
        self.log_std = nn.Parameter(torch.full((out,), float(np.log(std))))

    def mean(self, x):
        return self.net(((x - self.mu_in) / self.sd_in).clamp(-10, 10))

    def dist(self, x):
        return torch.distributions.Normal(self.mean(x), self.log_std.exp())

    def act(self, x):  # the mean (no noise), numpy in and out: pi_delta(s, a) of the delta model, or the action
        with torch.no_grad():
            return self.mean(torch.as_tensor(x, dtype=torch.float32)).numpy()

    forward = mean  # the critic (critic_net) is called as a module


def critic_net(inp, mean=None, var=None):
    """V(s): GaussianMLP's 2 x 64 tanh net with one output on inputs normalised by (mean, var); log std unused."""
    v = GaussianMLP(inp, 1, 1.0, mean, var)
    v.log_std.requires_grad_(False)
    return v


# ---- Tracking error and rewards of the delta model, PPO's losses (pure functions; tests call them) ----
def state_error(qpos, qvel, qpos_ref, qvel_ref, w_vel=0.1):
    """||s - s_ref||_W^2: squared error of all positions but root x (the frame moves) + w_vel x that of velocities."""
    return ((qpos[..., 1:] - qpos_ref[..., 1:]) ** 2).sum(-1) + w_vel * ((qvel - qvel_ref) ** 2).sum(-1)


def track_reward(err, delta, lam):
    """r = -err - lambda ||delta||^2 (always <= 0; 0 only for perfect tracking with no correction)."""
    return -err - lam * float(np.sum(np.square(delta)))


def official_track_reward(qpos, qvel, qpos_ref, qvel_ref, delta, prev_delta):
    """The official delta-model reward mapped to the hopper (fidelity table): exp(-mean sq. error / sigma) tracking
    terms (weight, sigma): body position = root z and pitch (1, 0.03), root velocity (0.5, 1), joint position (0.5, 1),
    joint velocity (0.5, 1); action rate -0.01 ||delta_t - delta_{t-1}||^2; -0.1 (exp(||delta||) - 1). At most 2.5."""
    kern = lambda x, x_ref, sigma: float(np.exp(-np.mean((x - x_ref) ** 2) / sigma))
    track = (1.0 * kern(qpos[1:3], qpos_ref[1:3], 0.03) + 0.5 * kern(qvel[:3], qvel_ref[:3], 1.0)
             + 0.5 * kern(qpos[3:], qpos_ref[3:], 1.0) + 0.5 * kern(qvel[3:], qvel_ref[3:], 1.0))
    return (track - 0.01 * float(np.sum(np.square(delta - prev_delta)))
            - 0.1 * (float(np.exp(np.linalg.norm(delta))) - 1.0))


def ppo_loss(new_logp, old_logp, adv, clip_coef):
    """PPO's clipped surrogate, to be minimised; advantages normalised per minibatch. Returns (loss, approx_kl)."""
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    log_ratio = new_logp - old_logp
    ratio = log_ratio.exp()
    loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip_coef, 1 + clip_coef)).mean()
    return loss, ((ratio - 1) - log_ratio).mean()


def gae(rew, val, next_val, done, gamma, lam):
    """GAE over a (T, N) rollout; next_val[t] = V(s_{t+1}) (0 after a termination, V(final obs) after a truncation);
    done[t] = 1 at any episode end cuts the recursion. Returns (advantages, returns)."""
    adv, last = torch.zeros_like(rew), torch.zeros(rew.shape[1])
    for t in reversed(range(len(rew))):
        td_error = rew[t] + gamma * next_val[t] - val[t]
        last = td_error + gamma * lam * (1 - done[t]) * last
        adv[t] = last
    return adv, adv + val


# ---- "Real", real rollouts, the delta model's env and the aligned sim ----
class PhysicsGap(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """'Real': the same robot with scaled torso mass, friction, actuator gear, an action delay (steps), and actuator
    dynamics outside SysID's family: the delayed action a passes a dead zone and a saturation,
    u = clip(sign(a) max(|a| - dead_zone, 0), -saturation, saturation), then a first-order low-pass filter,
    applied_t = lowpass applied_{t-1} + (1 - lowpass) u_t (a motor's bandwidth). The defaults change nothing."""

    def __init__(self, env, mass_scale=1.0, friction_scale=1.0, gear_scale=1.0, action_delay=0, dead_zone=0.0,
                 saturation=1.0, lowpass=0.0):
        gym.utils.RecordConstructorArgs.__init__(self, mass_scale=mass_scale, friction_scale=friction_scale,
                                                 gear_scale=gear_scale, action_delay=action_delay, dead_zone=dead_zone,
                                                 saturation=saturation, lowpass=lowpass)
        gym.Wrapper.__init__(self, env)
        m = env.unwrapped.model
        m.body_mass[1] *= mass_scale  # body 1 is the torso in the gymnasium MuJoCo locomotion models
        m.geom_friction[:, 0] *= friction_scale
        m.actuator_gear[:, 0] *= gear_scale
        self.delay, self.queue = action_delay, []
        self.dead_zone, self.saturation, self.lowpass = dead_zone, saturation, lowpass

    def reset(self, **kwargs):
        self.queue = [np.zeros(self.action_space.shape, np.float32)] * self.delay
        self.applied = np.zeros(self.action_space.shape)  # the low-pass filter's state
        return self.env.reset(**kwargs)

    def step(self, action):
        self.queue.append(np.asarray(action, np.float32))
        a = self.queue.pop(0)
        u = np.clip(np.sign(a) * np.maximum(np.abs(a) - self.dead_zone, 0), -self.saturation, self.saturation)
        self.applied = self.lowpass * self.applied + (1 - self.lowpass) * u
        return self.env.step(self.applied.astype(np.float32))


def register_env(name, env_id, wrap) -> str:
    """Register wrap(gym.make(env_id)) as asap/<env_id>-<name>, so that make_env / evaluate build it as any env."""
    new_id = f"asap/{env_id}-{name}"
    gym.registry.pop(new_id, None)
    gym.register(new_id, entry_point=lambda: wrap(gym.make(env_id)), max_episode_steps=None)
    return new_id


def collect_real(act_fn, real_env, episodes, noise, seed):
    """Roll the policy out in real: a list of dicts qpos (T+1, nq), qvel (T+1, nv), obs (T+1, o), act (T, a)."""
    rng, trajs, act_shape = np.random.default_rng(seed), [], real_env.action_space.shape
    for ep in range(episodes):
        obs, _ = real_env.reset(seed=seed + ep)
        d = real_env.unwrapped.data  # MuJoCo's state: (qpos, qvel)
        tr, done = {"qpos": [d.qpos.copy()], "qvel": [d.qvel.copy()], "obs": [obs], "act": []}, False
        while not done:
            a = np.clip(act_fn(obs) + noise * rng.standard_normal(act_shape), -1, 1).astype(np.float32)
            obs, _, term, trunc, _ = real_env.step(a)
            for k, v in zip(("qpos", "qvel", "obs", "act"), (d.qpos.copy(), d.qvel.copy(), obs, a)):
                tr[k].append(v)
            done = term or trunc
        trajs.append({k: np.array(v, np.float64 if k != "act" else np.float32) for k, v in tr.items()})  # states exact
    return trajs


class DeltaTrackingEnv(gym.Env):
    """Sim reset to recorded real states, the real actions replayed + delta; obs (sim obs, real action to be applied
    next); reward track_reward() (or official_track_reward()). A fall never terminates (terminate_by_* off officially;
    error rewards are <= 0, so an end would pay for falling): episodes truncate after `horizon` steps or the record."""

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
        qp, qv = self.sim.data.qpos.copy(), self.sim.data.qvel.copy()
        self.t += 1
        qp_ref, qv_ref = self.traj["qpos"][self.t], self.traj["qvel"][self.t]
        err = float(state_error(qp, qv, qp_ref, qv_ref))
        r = (official_track_reward(qp, qv, qp_ref, qv_ref, delta, self.prev_delta) if self.reward == "official"
             else track_reward(err, delta, self.lam))
        self.prev_delta = delta
        trunc = self.t - self.t0 >= self.horizon or self.t >= len(self.traj["act"])
        return self._obs(), r, False, bool(trunc), {"tracking_error": err}


class AlignedSim(gym.Wrapper):
    """Sim whose actions pass through the frozen delta model: a -> clip(a + pi_delta(s, a), -1, 1)."""

    def __init__(self, env, delta_model):
        super().__init__(env)
        self.delta_model = delta_model

    def step(self, action):
        a = np.clip(action, -1, 1).astype(np.float32)
        s = self.env.unwrapped._get_obs()  # the sim's current observation
        return self.env.step(np.clip(a + np.clip(self.delta_model.act(np.concatenate([s, a])), -1, 1), -1, 1))


def open_loop_error(env_id, trajs, horizon, delta_model=None, make=None, stride=5):
    """Mean state_error and mean |joint angle error| (rad) when the recorded real actions are replayed open loop
    in sim (optionally + pi_delta(s, a), or in `make()`'s physics) for `horizon` steps from real states."""
    sim = (make() if make else gym.make(env_id)).unwrapped
    errs, angle = [], []
    for tr in trajs:
        for t0 in range(0, len(tr["act"]) - horizon, stride):
            sim.reset(seed=0)
            sim.set_state(tr["qpos"][t0], tr["qvel"][t0])
            for t in range(t0, t0 + horizon):
                a = tr["act"][t]
                if delta_model is not None:
                    a = np.clip(a + delta_model.act(np.concatenate([sim._get_obs(), a])), -1, 1)
                sim.step(a)
                qp, qv = sim.data.qpos.copy(), sim.data.qvel.copy()
                errs.append(state_error(qp, qv, tr["qpos"][t + 1], tr["qvel"][t + 1]))
                angle.append(np.abs(qp[2:] - tr["qpos"][t + 1][2:]).mean())
    return float(np.mean(errs)), float(np.mean(angle))


# ---- PPO, for the delta model (stage 3) and the policy (stage 4) ----
class RewardScaler:
    """Rewards / running std of the discounted return, clipped to [-10, 10] (as gymnasium's NormalizeReward)."""

    def __init__(self, num_envs, gamma):
        self.var, self.mean, self.count, self.disc_ret, self.gamma = 1.0, 0.0, 1e-4, np.zeros(num_envs), gamma

    def __call__(self, r, ended):
        self.disc_ret = self.disc_ret * self.gamma + r
        bm, bv, n, tot = self.disc_ret.mean(), self.disc_ret.var(), len(r), self.count + len(r)
        self.var = (self.var * self.count + bv * n + (bm - self.mean) ** 2 * self.count * n / tot) / tot
        self.mean, self.count = self.mean + (bm - self.mean) * n / tot, tot
        self.disc_ret[ended] = 0.0  # restarts at each episode end
        return np.clip(r / np.sqrt(self.var + 1e-8), -10, 10)


def ppo(env_fns, actor, critic, total_steps, args, log, tag, on_eval=None, warmup_iters=0):
    """PPO (GAE, clipped ratio, value loss, reward scaling): trains actor and critic in place (first critic only)."""
    envs = gym.vector.SyncVectorEnv(env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    params = list(actor.parameters()) + list(critic.parameters())
    opt = torch.optim.Adam(params, lr=args.lr, eps=1e-5)
    N, T = len(env_fns), args.num_steps
    batch, mb = N * T, N * T // args.num_minibatches
    scaler, step, next_eval = RewardScaler(N, args.gamma), 0, args.eval_every
    obs, _ = envs.reset(seed=args.seed)
    for it in log.steps(tqdm(range(max(1, total_steps // batch)), desc=tag)):  # stops on SIGINT/SIGTERM (Logger)
        buf = {k: [] for k in ("obs", "act", "logp", "rew", "val", "done", "next_val")}
        for _ in range(T):
            o = torch.as_tensor(obs, dtype=torch.float32)
            with torch.no_grad():
                dist = actor.dist(o)
                a = dist.sample()
                buf["logp"].append(dist.log_prob(a).sum(-1))
                buf["val"].append(critic(o).squeeze(-1))
            obs, r, term, trunc, info = envs.step(a.numpy())
            step, ended = step + N, np.logical_or(term, trunc)
            end_val = torch.zeros(N)  # V(s_t+1) where an episode ended at t (0 after a termination); else val[t + 1]
            if ended.any():  # bootstrap through truncations, not through terminations
                final = torch.as_tensor(np.stack(info["final_obs"][ended]), dtype=torch.float32)
                not_term = torch.as_tensor(1.0 - term[ended]).float()
                end_val[torch.as_tensor(ended)] = critic(final).detach().squeeze(-1) * not_term
            buf["next_val"].append(end_val)
            buf["obs"].append(o)
            buf["act"].append(a)
            buf["rew"].append(torch.as_tensor(scaler(r, ended), dtype=torch.float32))
            buf["done"].append(torch.as_tensor(ended, dtype=torch.float32))
            if on_eval is not None and step >= next_eval:
                next_eval += args.eval_every
                on_eval(step)
        b = {k: torch.stack(v) for k, v in buf.items()}
        with torch.no_grad():  # V(s_t+1) of a running episode is the next rollout step's value: no extra forward
            last_val = critic(torch.as_tensor(obs, dtype=torch.float32)).squeeze(-1)
        b["next_val"] = torch.cat([b["val"][1:], last_val[None]]) * (1 - b["done"]) + b["next_val"]
        adv, ret = gae(b["rew"], b["val"], b["next_val"], b["done"], args.gamma, args.gae_lambda)
        flat = {k: v.reshape((batch,) + v.shape[2:]) for k, v in b.items()}
        flat["adv"], flat["ret"] = adv.reshape(-1), ret.reshape(-1)
        for _ in range(args.update_epochs):
            perm = torch.randperm(batch)
            for start in range(0, batch, mb):
                i = perm[start:start + mb]
                v_loss = 0.5 * ((critic(flat["obs"][i]).squeeze(-1) - flat["ret"][i]) ** 2).mean()
                loss = v_loss
                if it >= warmup_iters:  # after the critic's warm-up
                    new_logp = actor.dist(flat["obs"][i]).log_prob(flat["act"][i]).sum(-1)
                    pg_loss, _ = ppo_loss(new_logp, flat["logp"][i], flat["adv"][i], args.clip_coef)
                    loss = loss + pg_loss
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(params, 0.5)
                opt.step()
        log.log(step, **{f"losses/{tag}_value": v_loss.item(), f"charts/{tag}_reward": float(b["rew"].mean()),
                         f"charts/{tag}_std": actor.log_std.exp().mean().item()})
    envs.close()


def main():
    args = tyro.cli(Args)
    run_name = f"{args.env_id}__{args.exp_name}__{args.method}__{args.seed}__{int(time.time())}"
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.threads)
    policy_path = check_args(args)
    policy_act, p = load_policy(policy_path), dict(np.load(policy_path))  # p: weights and observation statistics
    real_id = register_env("real", args.env_id, lambda env: PhysicsGap(
        env, args.mass_scale, args.friction_scale, args.gear_scale, args.action_delay, args.dead_zone, args.saturation,
        args.action_lowpass))
    log = Logger(run_name, args)
    eval_seed = 10_000 + args.seed

    # ---- Stage 1, the pre-trained policy, transferred directly: its return in sim and in real ----
    sim_ret, _ = evaluate(policy_act, args.env_id, args.eval_episodes, eval_seed)
    real_ret, _ = evaluate(policy_act, real_id, args.eval_episodes, eval_seed)
    print(f"pre-trained policy: sim return {sim_ret:.0f}, real return {real_ret:.0f} (direct transfer)")
    log.log(0, **{"eval/return": real_ret, "eval/sim_return": sim_ret})
    obs_dim, act_dim = p["W0"].shape[0], p["W2"].shape[1]
    actor = GaussianMLP(obs_dim, act_dim, args.finetune_std, p["obs_mean"], p["obs_var"], init=p)
    saved = {"direct_real_return": real_ret}  # what model.pt keeps
    if args.method == "direct":  # baseline: no fine-tuning
        return log.finish(saved | {"actor": actor.state_dict(), "final_real_return": real_ret})

    # ---- Stage 2, real rollouts (the held-out ones measure the open-loop tracking error) ----
    trajs = collect_real(policy_act, make_env(real_id, args.seed)(), args.real_episodes + args.heldout_episodes,
                         args.real_noise, args.seed + 20_000)
    train, held = trajs[: args.real_episodes], trajs[args.real_episodes:]
    print(f"real rollouts: {sum(len(tr['act']) for tr in train)} train / {sum(len(tr['act']) for tr in held)} "
          "held-out steps")
    err, ang = open_loop_error(args.env_id, held, args.delta_horizon)
    log.log(0, **{"tracking/sim_error": err, "tracking/sim_angle_error": ang})
    print(f"open-loop tracking, held-out real data, {args.delta_horizon} steps: error {err:.4f}, angle {ang:.4f} rad")
    sim_id = args.env_id  # the sim the policy is fine-tuned in; baseline finetune-sim: the plain sim

    if args.method == "asap":  # ---- Stage 3, the delta action model: PPO in sim, replaying the real actions ----
        mean = np.concatenate([p["obs_mean"], np.zeros(act_dim, np.float32)])  # inputs: (sim obs, real action)
        var = np.concatenate([p["obs_var"], np.ones(act_dim, np.float32)])
        delta_model = GaussianMLP(obs_dim + act_dim, act_dim, args.delta_std, mean, var, zero_last=True)
        fns = [lambda i=i: DeltaTrackingEnv(args.env_id, train, args.delta_horizon, args.delta_penalty,
                                            args.seed + i, reward=args.delta_reward) for i in range(args.num_envs)]
        ppo(fns, delta_model, critic_net(obs_dim + act_dim, mean, var), args.delta_steps, args, log, "delta")
        delta_model.log_std.requires_grad_(False)  # frozen from here on
        err_d, ang_d = open_loop_error(args.env_id, held, args.delta_horizon, delta_model=delta_model)
        log.log(args.delta_steps, **{"tracking/sim_delta_error": err_d, "tracking/sim_delta_angle_error": ang_d})
        print(f"with the delta model: error {err_d:.4f} (was {err:.4f}), joint angle {ang_d:.4f} rad (was {ang:.4f})")
        sim_id = register_env("aligned", args.env_id, lambda env: AlignedSim(env, delta_model))
        saved["delta"] = delta_model.state_dict()
    elif args.method == "sysid":  # baseline: the sim with fitted physics scales
        saved["sysid_scales"] = scales = sysid_baseline(args, train, held, log)
        sim_id = register_env("sysid", args.env_id, lambda env: PhysicsGap(env, *scales))
    train_sim_ret, _ = evaluate(policy_act, sim_id, args.eval_episodes, eval_seed)  # alignment check (diagnostic)
    log.log(0, **{"eval/train_sim_return": train_sim_ret})
    print(f"pre-trained policy in the fine-tuning sim: {train_sim_ret:.0f} (real {real_ret:.0f}, sim {sim_ret:.0f})")

    # ---- Stage 4, fine-tune the policy in the (aligned) sim; Stage 5, evaluate it in real ----
    act_det = lambda o: np.clip(actor.act(o), -1, 1)  # the policy without exploration noise

    def on_eval(step):
        log.log(step, **{"eval/return": evaluate(act_det, real_id, args.eval_episodes, eval_seed)[0]})

    critic = critic_net(obs_dim, p["obs_mean"], p["obs_var"])
    ppo([make_env(sim_id, args.seed + i) for i in range(args.num_envs)], actor, critic, args.finetune_steps, args, log,
        "finetune", on_eval=on_eval, warmup_iters=args.critic_warmup_iters)
    real_ret, _ = evaluate(act_det, real_id, args.eval_episodes, eval_seed)
    sim_ret, _ = evaluate(act_det, args.env_id, args.eval_episodes, eval_seed)
    log.log(args.finetune_steps, **{"eval/return": real_ret, "eval/sim_return": sim_ret})
    print(f"after fine-tuning ({args.method}): real return {real_ret:.0f}, sim return {sim_ret:.0f}")
    return log.finish(saved | {"actor": actor.state_dict(), "final_real_return": real_ret})


# ==== shared helpers: identical in every file (see template.py) ====
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


# ==== the SysID baseline (--method sysid), not the method: a search of mass / friction / gear scales ====
def sysid_baseline(args, train, held, log):
    """Baseline sysid: the physics scales that best replay the real data (their held-out error logged)."""
    scales, rounds, converged = sysid_search(args.env_id, train, args.delta_horizon, args.sysid_grid,
                                             args.sysid_rounds, steps=lambda r: log.steps(tqdm(r, desc="sysid")))
    err, ang = open_loop_error(args.env_id, held, args.delta_horizon,
                               make=lambda: PhysicsGap(gym.make(args.env_id), *scales))
    log.log(0, **{"tracking/sysid_error": err, "tracking/sysid_angle_error": ang, "sysid/mass_scale": scales[0],
                  "sysid/friction_scale": scales[1], "sysid/gear_scale": scales[2],
                  "sysid/rounds": rounds, "sysid/converged": float(converged)})
    print(f"sysid: mass x{scales[0]:.2f}, friction x{scales[1]:.2f}, gear x{scales[2]:.2f}; held-out error {err:.4f}"
          + ("" if converged else f" (scales still changing after {rounds} rounds: raise --sysid-rounds)"))
    return scales


def sysid_search(env_id, trajs, horizon, grid_n, max_rounds, min_rounds=4, steps=lambda it: it):
    """Coordinate search of (mass, friction, gear) scales on a log grid over [0.5, 2] for the least open-loop error on
    `trajs`, until a round changes nothing (min_rounds to max_rounds). Returns (scales, rounds run, converged)."""
    scales, grid, rounds, converged = [1.0, 1.0, 1.0], np.exp(np.linspace(np.log(0.5), np.log(2.0), grid_n)), 0, False
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


# ==== this file's plumbing: the checks of the flags ====
def check_args(args) -> str:
    """Every check of the flags, the env id and the policy file, one sentence per error; returns the policy path."""
    make_env(args.env_id, args.seed)()  # one clear sentence for an unknown id
    path = args.policy_path or os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                                            f"{args.env_id}-expert-policy.npz")
    load_policy(path)  # one clear sentence for a missing file
    if not (0 <= args.dead_zone < 1 and 0 < args.saturation <= 1 and 0 <= args.action_lowpass < 1):
        raise SystemExit("--dead-zone and --action-lowpass must lie in [0, 1) and --saturation in (0, 1].")
    n_in, n_obs = np.load(path)["W0"].shape[0], gym.make(args.env_id).observation_space.shape[0]
    if n_in != n_obs:
        raise SystemExit(f"Policy file {path} takes observations of size {n_in}, but {args.env_id} has {n_obs}: "
                         "pass --policy-path made for this env.")
    return path


# Fidelity to the official code (LeCAR-Lab/ASAP, humanoidverse/)
# | design choice | official (source) | this file | why different |
# |---|---|---|---|
# | robot, "real" | Unitree G1; IsaacGym -> IsaacSim/Genesis, real robot | MuJoCo Hopper, "real" = changed mass / gear /
#   friction / delay (PhysicsGap); NOT official, off by default: actuator dead zone + saturation, low-pass filter on
#   actions | runs on a CPU; sim-to-sim as the paper's own checks; the actuator gaps are dynamics outside SysID's family
#   (a gap that SysID's grid holds decides the comparison by construction); benchmarked alone and with mass x1.5 |
# | delta model inputs | actor_obs: base height, foot contact forces, base linear and angular velocity, projected
#   gravity, joint positions and velocities, its own previous action (`actions`) and the real action
#   (`actions_open_loop`) (config/obs/delta_a/open_loop.yaml, envs/delta_a/delta_a_open_loop.py) | the hopper's sim
#   observation (root height and pitch, joint angles, all velocities) + the real action to be applied next; no foot
#   contact forces, no previous delta action | not tried: the benchmark ran with these inputs; without its previous
#   action the delta actor cannot see what the official form's action-rate term penalises |
# | falls in the delta env | never terminate (terminate_by_* False, config/env/delta_a_open_loop.yaml) | never
#   terminate, only truncate | - |
# | delta reward | config/rewards/motion_tracking/delta_a/reward_delta_a_openloop.yaml + README command: exp-kernel
#   tracking of body position (extended bodies) 1.0 (sigma 0.03 upper / 0.1 lower body), VR 3 points 1.0, feet
#   position 1.0, body rotation 0.5, body angular velocity 0.5, body velocity 0.5, joint position 0.5, joint velocity
#   0.5 (sigma 1); penalties: action rate -0.01, dof position limits -10, dof velocity limits -5, torque limits -0.1,
#   termination -200, torques 0, minimal action norm -0.1 (exp(norm a) - 1) (0 in the yaml, -0.1 in the README
#   command) | default: -state error - 0.1 norm(delta)^2. --delta-reward official uses body position (root z and
#   pitch, weight 1, sigma 0.03), body velocity and angular velocity as one root term (0.5, sigma 1), joint position
#   and velocity (0.5 each, sigma 1), action rate -0.01, minimal action norm -0.1; not used: VR points, feet
#   position, body rotation (the pitch is in the position term), the dof / torque limit penalties, termination (falls
#   do not terminate) | a hopper has no body keypoints, VR points or feet frames, and MuJoCo enforces its joint
#   ranges; the default is the simpler form the benchmark was first run with; the official form is offered, not
#   benchmarked |
# | episode horizon | max_episode_length_s=1.0 (README command) | --delta-horizon 10 steps = 0.08 s (Hopper dt
#   0.008); --delta-horizon 125 gives 1 s | the benchmark keeps the 10 steps it was first run with; 1 s is not
#   benchmarked |
# | delta critic | asymmetric: critic_obs adds the reference (real) body positions and their difference
#   (config/obs/delta_a/open_loop.yaml) | the actor's observation, normalised | not added for lack of time; the real
#   next state would be the hopper's reference |
# | RL algorithm | PPO (agents/delta_a/train_delta_a.py on agents/ppo/ppo.py, config/algo/ppo_train_delta_a.yaml):
#   init noise std 0.8, entropy bonus 0.01, actor and critic lr 1e-3 with the adaptive-KL schedule (desired KL 0.01),
#   5 epochs x 4 minibatches, 24 steps x 5000 envs per rollout, clip 0.2, GAE 0.99 / 0.95, clipped value loss,
#   grad norm 1.0, 512-256-128 ELU nets, no reward scaling | PPO, clip 0.2, GAE 0.99 / 0.95, but --delta-std 0.1,
#   no entropy bonus, one Adam at a fixed lr 3e-4, 10 epochs x 8 minibatches, 256 steps x 8 envs, unclipped value
#   loss x 0.5, grad norm 0.5, 2 x 64 tanh nets, rewards scaled by the running std of the return | the fine-tuning
#   PPO's settings reused for the delta model, as the benchmark ran; the official settings are not benchmarked |
# | SysID baseline | identify physical parameters (a baseline in the paper) | coordinate search of 3 scales on a
#   13-point log grid, until a round changes nothing (>= 4 rounds); the same 3 scales on the actuator gaps | the
#   simplest search that finds a grid optimum of 3 scales (test: recovers a known gear scale) |
# | fine-tuning | policy trained in the sim with the frozen delta, then deployed | same, from the shipped expert's
#   weights, --finetune-steps PPO steps | - |


if __name__ == "__main__":
    sys.exit(main())

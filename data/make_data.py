"""Make everything in data/: expert and medium policies for MuJoCo locomotion, and demonstration datasets.

    python data/make_data.py train --env-id Hopper-v4        # PPO; writes <env>-expert-policy.npz, <env>-medium-policy.npz
    python data/make_data.py rollout --env-id Hopper-v4      # writes <env>-expert.npz, <env>-medium.npz
    python data/make_data.py metaworld                       # MT10 scripted-policy demos -> metaworld-<task>.npz
    python data/make_data.py table                           # prints the quality table for data/README.md

Everything is seeded; see data/README.md for the numbers these commands produced here.

Policy file format (`<env>-<level>-policy.npz`, loads with numpy alone):
    obs_mean, obs_var   (obs_dim,)  running statistics; x = clip((obs - obs_mean) / sqrt(obs_var + 1e-8), -10, 10)
    W0 (obs_dim, 64), b0 (64,), W1 (64, 64), b1 (64,), W2 (64, act_dim), b2 (act_dim,)
    action = clip(tanh(tanh(x @ W0 + b0) @ W1 + b1) @ W2 + b2, -1, 1)       (deterministic mean action)
    log_std (act_dim,)  the Gaussian's state-independent log std (for a stochastic policy)
    env_id, mean_return, std_return, env_steps: metadata

Dataset format (`<name>.npz`, D4RL/Minari keys, float32, one row per transition, episodes back to back):
    observations (N, obs_dim), actions (N, act_dim), rewards (N,), next_observations (N, obs_dim),
    terminations (N,), truncations (N,)  [an episode ends where terminations or truncations is 1]
    env_id, policy, mean_return, std_return, success_rate, num_episodes: metadata (0-d arrays)
    MetaWorld files also hold `success` (N,): info["success"] after the step.
"""

import os
import sys
import time
from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro

DATA = os.environ.get("MAKE_DATA_OUT", os.path.dirname(os.path.abspath(__file__)))
LOCOMOTION = ["Hopper-v4", "Walker2d-v4", "HalfCheetah-v4"]
MT10 = ["reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
        "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3"]


@dataclass
class Args:
    cmd: tyro.conf.Positional[Literal["train", "rollout", "metaworld", "table"]]
    """what to make"""
    env_id: str = "Hopper-v4"
    """locomotion env (train, rollout)"""
    seed: int = 1
    """seed for PPO training; rollouts use seed 1000 + episode index"""
    total_timesteps: int = 1_000_000
    """PPO env steps"""
    num_envs: int = 8
    """parallel envs for PPO"""
    num_steps: int = 256
    """steps per env per PPO rollout (batch = num_envs * num_steps)"""
    snapshot_every: int = 40_000
    """env steps between policy snapshots (the medium policy is picked among them)"""
    medium_fraction: float = 0.4
    """medium policy: the snapshot whose return is closest to this fraction of the expert's"""
    episodes: int = 20
    """episodes per locomotion dataset"""
    mw_episodes: int = 50
    """episodes per MetaWorld task"""


# ----------------------------------------------------------------------------------------------------------
# PPO (CleanRL's ppo_continuous_action, vectorised, shared observation normalisation saved with the policy)
# ----------------------------------------------------------------------------------------------------------
class RunningMeanStd:
    def __init__(self, shape):
        self.mean, self.var, self.count = np.zeros(shape), np.ones(shape), 1e-4

    def update(self, x):
        bm, bv, bc = x.mean(0), x.var(0), x.shape[0]
        d, tot = bm - self.mean, self.count + bc
        self.mean = self.mean + d * bc / tot
        self.var = (self.var * self.count + bv * bc + d**2 * self.count * bc / tot) / tot
        self.count = tot


def layer_init(layer, std=np.sqrt(2), bias=0.0):
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class Agent(nn.Module):
    def __init__(self, obs_dim, act_dim):
        super().__init__()
        self.critic = nn.Sequential(layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(), layer_init(nn.Linear(64, 64)),
                                    nn.Tanh(), layer_init(nn.Linear(64, 1), std=1.0))
        self.actor = nn.Sequential(layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(), layer_init(nn.Linear(64, 64)),
                                   nn.Tanh(), layer_init(nn.Linear(64, act_dim), std=0.01))
        self.log_std = nn.Parameter(torch.zeros(act_dim))

    def dist(self, x):
        return torch.distributions.Normal(self.actor(x), self.log_std.exp())


def policy_arrays(agent, rms, env_id):
    a = agent.actor
    t = lambda p: p.detach().numpy().astype(np.float32).copy()  # noqa: E731
    return dict(obs_mean=rms.mean.astype(np.float32), obs_var=rms.var.astype(np.float32),
                W0=t(a[0].weight.T), b0=t(a[0].bias), W1=t(a[2].weight.T), b1=t(a[2].bias),
                W2=t(a[4].weight.T), b2=t(a[4].bias), log_std=t(agent.log_std), env_id=np.array(env_id))


def policy_act(p, obs):
    """Deterministic action of a saved policy (numpy only; the same lines the algorithm files carry)."""
    x = np.clip((obs - p["obs_mean"]) / np.sqrt(p["obs_var"] + 1e-8), -10, 10)
    h = np.tanh(np.tanh(x @ p["W0"] + p["b0"]) @ p["W1"] + p["b1"])
    return np.clip(h @ p["W2"] + p["b2"], -1.0, 1.0)


def evaluate_policy(p, env_id, episodes, seed=10_000):
    env, rets = gym.make(env_id), []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, ret = False, 0.0
        while not done:
            obs, r, term, trunc, _ = env.step(policy_act(p, obs))
            ret, done = ret + r, term or trunc
        rets.append(ret)
    return float(np.mean(rets)), float(np.std(rets))


def train(args):
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(1)
    envs = gym.vector.SyncVectorEnv([lambda: gym.wrappers.ClipAction(gym.make(args.env_id)) for _ in range(args.num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    agent = Agent(obs_dim, act_dim)
    opt = torch.optim.Adam(agent.parameters(), lr=3e-4, eps=1e-5)
    rms, ret_rms = RunningMeanStd(obs_dim), RunningMeanStd(())
    gamma, lam, clip, epochs, n_mb = 0.99, 0.95, 0.2, 10, 32
    N, T = args.num_envs, args.num_steps
    batch = N * T
    num_updates = args.total_timesteps // batch
    obs_buf, act_buf = np.zeros((T, N, obs_dim), np.float32), np.zeros((T, N, act_dim), np.float32)
    logp_buf, rew_buf, val_buf = np.zeros((T, N), np.float32), np.zeros((T, N), np.float32), np.zeros((T, N), np.float32)
    done_buf, next_val_buf = np.zeros((T, N), np.float32), np.zeros((T, N), np.float32)
    norm = lambda o: np.clip((o - rms.mean) / np.sqrt(rms.var + 1e-8), -10, 10).astype(np.float32)  # noqa: E731
    raw_obs, _ = envs.reset(seed=args.seed)
    disc_ret, ep_ret, recent, snaps, step, t0 = np.zeros(N), np.zeros(N), [], [], 0, time.time()
    for update in range(num_updates):
        opt.param_groups[0]["lr"] = 3e-4 * (1.0 - update / num_updates)
        for t in range(T):
            rms.update(raw_obs)
            o = norm(raw_obs)
            with torch.no_grad():
                d = agent.dist(torch.as_tensor(o))
                a = d.sample()
                logp, v = d.log_prob(a).sum(-1), agent.critic(torch.as_tensor(o)).squeeze(-1)
            raw_next, r, term, trunc, info = envs.step(a.numpy())
            step += N
            ep_ret += r
            disc_ret = disc_ret * gamma + r  # reward scaling as gymnasium's NormalizeReward
            ret_rms.update(disc_ret)
            obs_buf[t], act_buf[t], logp_buf[t], val_buf[t] = o, a.numpy(), logp.numpy(), v.numpy()
            rew_buf[t] = np.clip(r / np.sqrt(ret_rms.var + 1e-8), -10, 10)
            done_buf[t] = np.logical_or(term, trunc)
            # bootstrap value of the true next state (final obs on episode ends); 0 on termination
            nxt = raw_next.copy()
            ended = np.logical_or(term, trunc)
            if ended.any():
                nxt[ended] = np.stack(info["final_obs"][ended])
                for i in np.where(ended)[0]:
                    recent.append(ep_ret[i])
                ep_ret[ended], disc_ret[ended] = 0.0, 0.0
            with torch.no_grad():
                next_val_buf[t] = agent.critic(torch.as_tensor(norm(nxt))).squeeze(-1).numpy() * (1 - term)
            raw_obs = raw_next
            if step % args.snapshot_every < N:
                p = policy_arrays(agent, rms, args.env_id)
                m, s = evaluate_policy(p, args.env_id, 5)
                snaps.append((step, m, s, p))
                print(f"{args.env_id} step {step} eval5 {m:.0f} train {np.mean(recent[-20:]) if recent else 0:.0f} "
                      f"sps {step / (time.time() - t0):.0f}", flush=True)
        # GAE over the rollout (episode ends cut the recursion; next values already hold bootstraps)
        adv, last = np.zeros((T, N), np.float32), np.zeros(N, np.float32)
        for t in reversed(range(T)):
            delta = rew_buf[t] + gamma * next_val_buf[t] - val_buf[t]
            last = delta + gamma * lam * (1 - done_buf[t]) * last
            adv[t] = last
        ret = adv + val_buf
        b_obs, b_act, b_logp = (torch.as_tensor(x.reshape(batch, -1)) for x in (obs_buf, act_buf, logp_buf))
        b_logp, b_adv, b_ret = b_logp.squeeze(-1), torch.as_tensor(adv.reshape(-1)), torch.as_tensor(ret.reshape(-1))
        mb = batch // n_mb
        for _ in range(epochs):
            perm = torch.randperm(batch)
            for i in range(0, batch, mb):
                idx = perm[i:i + mb]
                d = agent.dist(b_obs[idx])
                ratio = (d.log_prob(b_act[idx]).sum(-1) - b_logp[idx]).exp()
                a_ = b_adv[idx]
                a_ = (a_ - a_.mean()) / (a_.std() + 1e-8)
                pg = torch.max(-a_ * ratio, -a_ * ratio.clamp(1 - clip, 1 + clip)).mean()
                vl = 0.5 * ((agent.critic(b_obs[idx]).squeeze(-1) - b_ret[idx]) ** 2).mean()
                loss = pg + 0.5 * vl
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
                opt.step()
    p = policy_arrays(agent, rms, args.env_id)
    m, s = evaluate_policy(p, args.env_id, 5)
    snaps.append((step, m, s, p))
    # expert: the best of the 3 best snapshots on 10 fresh episodes; medium: the snapshot whose 5-episode mean is
    # closest to medium_fraction of the expert's, among those with a consistent return (5-episode std < 20% of mean)
    best = sorted(snaps, key=lambda s: -s[1])[:3]
    scored = [(evaluate_policy(s[3], args.env_id, 10), s) for s in best]
    (em, es), (estep, _, _, ep) = max(scored, key=lambda x: x[0][0])
    target = args.medium_fraction * em
    steady = [s for s in snaps if s[2] < 0.2 * abs(s[1])] or snaps
    mstep, _, _, mp = min(steady, key=lambda s: abs(s[1] - target))
    mm, ms = evaluate_policy(mp, args.env_id, 10)
    for level, p, mean, std, st in (("expert", ep, em, es, estep), ("medium", mp, mm, ms, mstep)):
        path = os.path.join(DATA, f"{args.env_id}-{level}-policy.npz")
        np.savez(path, **p, mean_return=np.array(mean, np.float32), std_return=np.array(std, np.float32),
                 env_steps=np.array(st), seed=np.array(args.seed))
        print(f"wrote {path}: snapshot at {st} env steps, return {mean:.1f} +- {std:.1f} (10 episodes)")


# ----------------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------------
def save_dataset(path, rows, meta):
    out = {k: np.asarray(v, np.float32) for k, v in rows.items()}
    out.update({k: np.array(v) for k, v in meta.items()})
    np.savez_compressed(path, **out)
    print(f"wrote {path}: {len(out['actions'])} transitions, {os.path.getsize(path) / 1e6:.2f} MB, "
          + ", ".join(f"{k}={v}" for k, v in meta.items()))


def rollout(args):
    for level in ("expert", "medium"):
        p = dict(np.load(os.path.join(DATA, f"{args.env_id}-{level}-policy.npz")))
        env = gym.make(args.env_id)
        rows = {k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminations", "truncations")}
        rets = []
        for ep in range(args.episodes):
            obs, _ = env.reset(seed=1000 + ep)
            done, ret = False, 0.0
            while not done:
                a = policy_act(p, obs)
                nxt, r, term, trunc, _ = env.step(a)
                for k, v in zip(rows, (obs, a, r, nxt, term, trunc)):
                    rows[k].append(v)
                obs, ret, done = nxt, ret + r, term or trunc
            rets.append(ret)
        save_dataset(os.path.join(DATA, f"{args.env_id}-{level}.npz"), rows,
                     dict(env_id=args.env_id, policy=f"{args.env_id}-{level}-policy.npz", mean_return=float(np.mean(rets)),
                          std_return=float(np.std(rets)), success_rate=float("nan"), num_episodes=args.episodes))


def metaworld_demos(args):
    import metaworld.policies as P  # noqa: F401  (registers Meta-World/* envs)

    for task in MT10:
        name = "Sawyer" + "".join(w.capitalize() for w in task[:-3].split("-")) + "V3Policy"
        name = name.replace("PegInsertSide", "PegInsertionSide")
        policy = getattr(P, name)()
        env = gym.make("Meta-World/MT1", env_name=task, seed=args.seed, terminate_on_success=True)
        rows = {k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminations", "truncations", "success")}
        rets, succ, lens = [], [], []
        for ep in range(args.mw_episodes):
            obs, _ = env.reset(seed=1000 + ep)
            done, ret, t, ok = False, 0.0, 0, False
            while not done:
                a = np.clip(policy.get_action(obs), -1, 1)
                nxt, r, term, trunc, info = env.step(a)
                ok = bool(info["success"])  # the episode terminates at success (ConRFT / HIL-SERL convention)
                t += 1
                for k, v in zip(rows, (obs, a, r, nxt, term, trunc and not term, ok)):
                    rows[k].append(v)
                obs, ret, done = nxt, ret + r, term or trunc
            rets.append(ret)
            succ.append(ok)
            lens.append(t)
        save_dataset(os.path.join(DATA, f"metaworld-{task}.npz"), rows,
                     dict(env_id=f"metaworld/{task}", policy=name, mean_return=float(np.mean(rets)),
                          std_return=float(np.std(rets)), success_rate=float(np.mean(succ)), num_episodes=args.mw_episodes,
                          mean_length=float(np.mean(lens))))


def table():
    for f in sorted(os.listdir(DATA)):
        if not f.endswith(".npz"):
            continue
        d = np.load(os.path.join(DATA, f))
        if "W0" in d:
            print(f"| `{f}` | policy | {int(d['env_steps'])} PPO steps, seed {int(d['seed'])} | "
                  f"{float(d['mean_return']):.1f} +- {float(d['std_return']):.1f} (10 ep) |")
        else:
            sr = float(d["success_rate"])
            print(f"| `{f}` | {int(d['num_episodes'])} ep, {len(d['actions'])} steps | {d['policy']} | "
                  f"{float(d['mean_return']):.1f} +- {float(d['std_return']):.1f}"
                  + ("" if np.isnan(sr) else f", success {sr:.2f}") + " |")


if __name__ == "__main__":
    args = tyro.cli(Args)
    {"train": train, "rollout": rollout, "metaworld": metaworld_demos, "table": lambda a: table()}[args.cmd](args)
    sys.exit(0)

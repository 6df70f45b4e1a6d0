"""RLIF: off-policy RL whose only reward is the expert's intervention, with HG-DAgger / DAgger baselines.

Paper: Luo, Dong, ... Levine, "RLIF: Interactive Imitation Learning as Reinforcement Learning", ICLR 2024,
arXiv 2311.12996; official code pd-perry/RLIF (read, not copied). The learner is RLPD (rlpd.py, same code):
`diff rlpd.py rlif.py` shows what RLIF adds.

Setting (Sec. 4): an expert watches the learner and takes over; the environment's reward is NOT used for
learning (only logged as charts/episodic_return and eval/return).
    Reward (Sec. 4.1, as the code labels it): the learner's transition just before a takeover gets r = -1,
    every other stored transition r = 0; masks from terminations only.                  -> intervention_rewards()
    Deviation (--terminal-penalty, on by default): a termination (a fall) is labelled r = -1/(1 - gamma), as if the
    expert intervened at every step after it; with the official labels (r = 0 there) the learner learned to fall
    at once to escape the -1 labels (Hopper, this CPU setting). --no-terminal-penalty restores them. -> failure_label()
    Value-based intervention model (Sec. 5, Eq. for the intervention strategy): with a reference critic Q_ref,
    if Q_ref(s, a_learner) < alpha * Q_ref(s, a_expert) the expert intervenes with probability beta, else with
    probability 1 - beta (--intervene-alpha 0.99 as for Walker2d, --intervene-beta 0.95).  -> should_intervene()
    Random intervention: at every learner step with probability --intervene-prob.
    A takeover lasts --takeover-steps (4) steps. The expert's steps are not stored except the last one (r = 0),
    unless --hil-serl: then every expert step goes to the online buffer AND to the demo buffer (HIL-SERL's rule).
    Reference critic: the paper takes it from a stronger RLPD agent. Here it is fitted in this file, honestly and
    cheaply: Monte-Carlo regression of Q_ref(s, a) on --qref-episodes rollouts of the shipped *expert* policy with
    per-episode Gaussian action noise in [0, 0.5] (so off-expert actions are covered), gamma 0.99.   -> fit_qref()
    The intervening expert is the shipped policy of --expert-level (expert or medium, optional --expert-noise):
    a medium expert is the paper's "suboptimal expert" case.
Baselines (--algo), same intervention model and the same expert:
    hg-dagger: a deterministic policy trained by BC on the demos plus the expert's takeover labels (aggregated);
    dagger: the expert labels every state the learner visits (no takeovers; the learner always acts).
    Both take --bc-updates BC steps every --bc-every env steps.                          -> bc_loss()

Run:
    python rlif.py --env-id Hopper-v4 --expert-level medium
    python rlif.py --env-id Hopper-v4 --algo hg-dagger --expert-level medium
    python rlif.py --env-id Walker2d-v4 --intervention random --intervene-prob 0.3 --utd 1
"""

import csv
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
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
    demo_path: str = ""
    """demos (.npz or minari:<id>), rewards relabelled 0; empty: data/<env-id>-<expert-level>.npz; none: no demos"""
    total_timesteps: int = 100_000
    """online env steps"""
    buffer_size: int = 1_000_000
    """online replay capacity"""
    start_training: int = 1000
    """env steps (learner acting, expert intervening) before the first update"""
    batch_size: int = 256
    """minibatch of one critic step"""
    utd: int = 15
    """critic updates per env step (update-to-data ratio G; the paper's Hopper script uses 15, Walker2d 1)"""
    num_qs: int = 10
    """critic ensemble size E"""
    num_min_qs: int = 2
    """size Z of the random subset of target critics the TD target takes the min over"""
    offline_ratio: float = 0.5
    """fraction of every batch drawn from the offline data (0: SAC from scratch)"""
    hidden: int = 256
    """width of the 2 hidden layers of actor and critics"""
    critic_layer_norm: bool = True
    """LayerNorm after every hidden critic layer"""
    actor_lr: float = 3e-4
    """actor learning rate"""
    critic_lr: float = 3e-4
    """critic learning rate"""
    temp_lr: float = 3e-4
    """temperature learning rate"""
    gamma: float = 0.99
    """discount"""
    tau: float = 0.005
    """Polyak rate of the target critics (after every critic step)"""
    init_temperature: float = 1.0
    """initial alpha"""
    backup_entropy: bool = False
    """subtract alpha log pi(a'|s') in the TD target (RLIF: off)"""
    algo: Literal["rlif", "hg-dagger", "dagger"] = "rlif"
    """rlif: RL on intervention rewards; hg-dagger / dagger: the BC baselines"""
    expert_level: str = "medium"
    """the intervening expert: data/<env-id>-<level>-policy.npz, expert or medium"""
    expert_noise: float = 0.0
    """std of Gaussian noise on the intervening expert's actions"""
    intervention: Literal["value", "random"] = "value"
    """intervention model"""
    intervene_alpha: float = 0.99
    """alpha: intervene when Q_ref(s, a_learner) < alpha * Q_ref(s, a_expert)"""
    intervene_beta: float = 0.95
    """beta: probability of intervening when the rule fires (1 - beta otherwise)"""
    intervene_prob: float = 0.3
    """random model: probability of a takeover at each learner step"""
    takeover_steps: int = 4
    """steps the expert acts once it takes over"""
    hil_serl: bool = False
    """store expert takeover steps in both the demo and the online buffer"""
    terminal_penalty: bool = True
    """label a termination (a fall) r = -1/(1 - gamma), as if the expert intervened at every step from then on;
    False: the official code's labels (r = 0, mask 0), under which falling ends all future -1 labels"""
    qref_episodes: int = 20
    """noisy expert rollouts for the reference critic"""
    qref_steps: int = 3000
    """regression steps for the reference critic"""
    bc_every: int = 1000
    """DAgger family: env steps between BC phases"""
    bc_updates: int = 500
    """DAgger family: BC steps per phase (also the pre-training steps on the demos, x4)"""
    eval_every: int = 5000
    """env steps between evaluations"""
    eval_episodes: int = 10
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


# ---- shared: load_demos ----
DEMO_KEYS = ("observations", "actions", "rewards", "next_observations", "terminations", "truncations")


def load_demos(path: str, env: gym.Env) -> dict[str, np.ndarray]:
    """Demonstrations as float32 arrays with D4RL/Minari keys, from a .npz (data/make_data.py writes them) or
    `minari:<dataset-id>` (a local Minari dataset); shapes are checked against `env`."""
    if path.startswith("minari:"):
        try:
            import minari
        except ImportError:
            raise SystemExit(f"{path} needs minari: pip install 'minari[hdf5]'.") from None
        eps = list(minari.load_dataset(path[len("minari:"):]).iterate_episodes())
        d = {"observations": np.concatenate([e.observations[:-1] for e in eps]),
             "next_observations": np.concatenate([e.observations[1:] for e in eps]),
             **{k: np.concatenate([getattr(e, k) for e in eps]) for k in ("actions", "rewards", "terminations", "truncations")}}
    elif not os.path.exists(path):
        raise SystemExit(f"Demo file {path} not found: make it with `python data/make_data.py rollout --env-id "
                         f"<env>` (or `metaworld`), or pass --demo-path to an existing file.")
    else:
        with np.load(path) as f:
            d = {k: f[k] for k in DEMO_KEYS}
    d = {k: np.asarray(v, np.float32).reshape(len(v), -1) if k in ("observations", "next_observations", "actions")
         else np.asarray(v, np.float32).reshape(-1) for k, v in d.items()}
    want_obs, want_act = env.observation_space.shape, env.action_space.shape
    if d["observations"].shape[1:] != want_obs or d["actions"].shape[1:] != want_act:
        raise SystemExit(f"Demo file {path} holds observations of shape {d['observations'].shape[1:]} and actions of "
                         f"shape {d['actions'].shape[1:]}, but the env has {want_obs} and {want_act}: "
                         "pass --demo-path made for this env.")
    return d
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
    """TensorBoard scalars and a long-format metrics.csv (step,key,value) under runs/<run_name>/."""

    def __init__(self, run_name: str, args):
        self.dir = os.path.join("runs", run_name)
        self.writer = SummaryWriter(self.dir)
        table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
        self.writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + table)
        self.file = open(os.path.join(self.dir, "metrics.csv"), "w", newline="")
        self.csv = csv.writer(self.file)
        self.csv.writerow(["step", "key", "value"])

    def log(self, step: int, **scalars: float):
        for k, v in scalars.items():
            if not np.isfinite(v) and k.startswith("losses/"):
                raise SystemExit(f"{k} became {v} at step {step}: lower the learning rate or check the demo data.")
            self.writer.add_scalar(k, v, step)
            self.csv.writerow([step, k, float(v)])
        self.file.flush()

    def close(self):
        self.writer.close()
        self.file.close()
# ---- end shared ----


class ReplayBuffer:
    """Online transitions in preallocated numpy arrays (mask = 1 - termination)."""

    def __init__(self, obs_dim, act_dim, capacity):
        self.obs, self.next_obs = np.zeros((capacity, obs_dim), np.float32), np.zeros((capacity, obs_dim), np.float32)
        self.act = np.zeros((capacity, act_dim), np.float32)
        self.rew, self.mask = np.zeros(capacity, np.float32), np.zeros(capacity, np.float32)
        self.capacity, self.ptr, self.size = capacity, 0, 0

    def add(self, obs, act, rew, next_obs, mask):
        i = self.ptr
        self.obs[i], self.act[i], self.rew[i], self.next_obs[i], self.mask[i] = obs, act, rew, next_obs, mask
        self.ptr, self.size = (i + 1) % self.capacity, min(self.size + 1, self.capacity)

    def arrays(self):
        n = self.size
        return {"observations": self.obs[:n], "actions": self.act[:n], "rewards": self.rew[:n],
                "next_observations": self.next_obs[:n], "masks": self.mask[:n]}


def demo_arrays(demos):
    """Offline data in the buffer's layout: masks from terminations only; actions clipped to +-(1 - 1e-5)."""
    return {"observations": demos["observations"], "actions": np.clip(demos["actions"], -1 + 1e-5, 1 - 1e-5),
            "rewards": demos["rewards"], "next_observations": demos["next_observations"],
            "masks": 1.0 - demos["terminations"]}


def sample_batch(online, offline, batch_size, utd, offline_ratio, rng):
    """utd minibatches at once, shape (utd, batch_size, ...): in every slice the first round(offline_ratio *
    batch_size) rows come from `offline`, the rest from `online` (symmetric sampling). `is_offline` marks them."""
    n_off = int(round(offline_ratio * batch_size)) if offline is not None else 0
    parts = []
    for src, n in ((offline, n_off), (online, batch_size - n_off)):
        if n == 0:
            continue
        idx = rng.integers(0, len(src["rewards"]), size=(utd, n))
        parts.append({k: v[idx] for k, v in src.items()} | {"is_offline": np.full((utd, n), src is offline, np.float32)})
    return {k: torch.as_tensor(np.concatenate([p[k] for p in parts], axis=1)) for k in parts[0]}


# ----------------------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------------------
class EnsembleLinear(nn.Module):
    """E independent linear layers as one batched matmul: (E, B, inp) -> (E, B, out)."""

    def __init__(self, num_members, inp, out):
        super().__init__()
        bound = 1 / np.sqrt(inp)
        self.weight = nn.Parameter(torch.empty(num_members, inp, out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_members, 1, out).uniform_(-bound, bound))

    def forward(self, x):
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over features with a separate affine per member: (E, B, h) -> (E, B, h)."""

    def __init__(self, num_members, h):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(num_members, 1, h)), nn.Parameter(torch.zeros(num_members, 1, h))

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:]) * self.weight + self.bias


class CriticEnsemble(nn.Module):
    """E critics Q_i(s, a), each Dense -> LayerNorm -> ReLU (x2) -> Dense(1), in one batched module."""

    def __init__(self, obs_dim, act_dim, num_qs, hidden=256, layer_norm=True):
        super().__init__()
        self.num_qs = num_qs
        norm = (lambda: EnsembleLayerNorm(num_qs, hidden)) if layer_norm else nn.Identity
        self.net = nn.Sequential(EnsembleLinear(num_qs, obs_dim + act_dim, hidden), norm(), nn.ReLU(),
                                 EnsembleLinear(num_qs, hidden, hidden), norm(), nn.ReLU(), EnsembleLinear(num_qs, hidden, 1))

    def forward(self, obs, act):
        x = torch.cat([obs, act], -1)
        return self.net(x.unsqueeze(0).expand(self.num_qs, *x.shape))  # (E, B, 1)


class Actor(nn.Module):
    """Tanh-squashed Gaussian, state-dependent log std clipped to [-20, 2]; actions rescaled to the env's box."""

    def __init__(self, obs_dim, act_dim, hidden, low, high):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.mean, self.log_std = nn.Linear(hidden, act_dim), nn.Linear(hidden, act_dim)
        self.register_buffer("scale", torch.as_tensor((high - low) / 2, dtype=torch.float32))
        self.register_buffer("center", torch.as_tensor((high + low) / 2, dtype=torch.float32))

    def forward(self, obs, deterministic=False):
        """Returns (action, log pi(action|obs) of shape (B, 1))."""
        h = self.trunk(obs)
        mean, log_std = self.mean(h), self.log_std(h).clamp(-20, 2)
        u = mean if deterministic else mean + log_std.exp() * torch.randn_like(mean)
        a = torch.tanh(u)
        logp = torch.distributions.Normal(mean, log_std.exp()).log_prob(u) - torch.log(self.scale * (1 - a.pow(2)) + 1e-6)
        return a * self.scale + self.center, logp.sum(-1, keepdim=True)


# ----------------------------------------------------------------------------------------------------------
# Losses (pure functions; tests call them)
# ----------------------------------------------------------------------------------------------------------
def subset_min_target(q_next: torch.Tensor, num_min_qs: int, generator=None) -> torch.Tensor:
    """min over a random subset (without replacement) of num_min_qs of the E target values: (E, B, 1) -> (B, 1)."""
    idx = torch.randperm(q_next.shape[0], generator=generator)[:num_min_qs]
    return q_next[idx].min(0).values


def td_target(rew, mask, q_next_min, next_logp, alpha, gamma, backup_entropy):
    """y = r + gamma * mask * (min-subset Q'(s', a') - alpha log pi(a'|s') [if backup_entropy]); (B, 1)."""
    v = q_next_min - alpha * next_logp if backup_entropy else q_next_min
    return rew.unsqueeze(-1) + gamma * mask.unsqueeze(-1) * v


def critic_loss(qs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the E critics and the batch of (Q_i - y)^2; qs (E, B, 1), target (B, 1)."""
    return ((qs - target.unsqueeze(0)) ** 2).mean()


def actor_loss(qs_pi: torch.Tensor, logp: torch.Tensor, alpha) -> torch.Tensor:
    """E[ alpha log pi(a~|s) - mean_i Q_i(s, a~) ]; qs_pi (E, B, 1), logp (B, 1)."""
    return (alpha * logp - qs_pi.mean(0)).mean()


def temperature_loss(log_alpha: torch.Tensor, logp: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """alpha * (entropy - target_entropy), entropy estimated as -log pi: lowers alpha when entropy is high."""
    return (log_alpha.exp() * (-logp.detach() - target_entropy)).mean()


# ----------------------------------------------------------------------------------------------------------
# RLIF: intervention model, reward labels, reference critic, BC loss (pure functions; tests call them)
# ----------------------------------------------------------------------------------------------------------
def intervention_rewards(expert_acted: np.ndarray) -> np.ndarray:
    """Reward labels of one trajectory from who acted at each step (True: the expert): -1 on every learner step
    that is followed by an expert step (the transition just before a takeover), 0 elsewhere."""
    e = np.asarray(expert_acted, bool)
    r = np.zeros(len(e), np.float32)
    r[:-1][~e[:-1] & e[1:]] = -1.0
    return r


def failure_label(r: float, mask: float, gamma: float, on: bool) -> float:
    """--terminal-penalty: a transition that ends in termination (a fall) gets r - 1/(1 - gamma), the discounted
    return of an expert intervening at every step from then on. With the official labels (r = 0, mask 0) a fall is
    worth 0, more than any continuation that will see -1 labels, and the learner learns to fall at once (seen on
    Hopper here: about 20-step episodes throughout training). Other transitions keep r."""
    return r - 1.0 / (1.0 - gamma) if on and mask == 0.0 else r


def should_intervene(q_learner: float, q_expert: float, alpha: float, beta: float, u: float) -> bool:
    """Value-based model: the rule Q_ref(s, a_l) < alpha * Q_ref(s, a_e) fires -> intervene if u < beta;
    otherwise intervene if u < 1 - beta (u ~ U[0, 1))."""
    return u < (beta if q_learner < alpha * q_expert else 1.0 - beta)


class QRef(nn.Module):
    """Reference critic Q_ref(s, a): 2 x 256 ReLU MLP on normalised observations."""

    def __init__(self, obs_mean, obs_std, act_dim, hidden=256):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(obs_mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(obs_std, dtype=torch.float32))
        self.net = nn.Sequential(nn.Linear(len(obs_mean) + act_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, obs, act):
        return self.net(torch.cat([(obs - self.mean) / self.std, act], -1)).squeeze(-1)


def fit_qref(expert_act, env, episodes, steps, gamma, seed):
    """Monte-Carlo regression of Q_ref on rollouts of `expert_act` with per-episode action noise in [0, 0.5]."""
    rng, S, A, G = np.random.default_rng(seed), [], [], []
    for ep in range(episodes):
        sigma = 0.5 * ep / max(episodes - 1, 1)
        obs, _ = env.reset(seed=seed + 50_000 + ep)
        done, rews = False, []
        while not done:
            a = np.clip(expert_act(obs) + sigma * rng.standard_normal(env.action_space.shape), -1, 1).astype(np.float32)
            S.append(obs)
            A.append(a)
            obs, r, term, trunc, _ = env.step(a)
            rews.append(float(r))
            done = term or trunc
        g, ret = 0.0, []
        for r in reversed(rews):
            g = r + gamma * g
            ret.append(g)
        G.extend(reversed(ret))
    S, A, G = (torch.as_tensor(np.array(x), dtype=torch.float32) for x in (S, A, G))
    q = QRef(S.mean(0), S.std(0) + 1e-3, A.shape[1])
    opt, scale = torch.optim.Adam(q.parameters(), lr=1e-3), G.abs().mean() + 1e-6
    for _ in range(steps):
        idx = torch.randint(len(S), (256,))
        loss = ((q(S[idx], A[idx]) - G[idx]) / scale).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        r2 = 1 - ((q(S, A) - G) ** 2).mean() / G.var()
    return q.eval(), float(r2), len(S)


def bc_loss(actor, obs, act):
    """DAgger family: squared error between the deterministic action and the expert's label; scalar."""
    return ((actor(obs, deterministic=True)[0] - act) ** 2).sum(-1).mean()


def main():
    args = tyro.cli(Args)
    if not 1 <= args.num_min_qs <= args.num_qs:
        raise SystemExit(f"--num-min-qs ({args.num_min_qs}) must be between 1 and --num-qs ({args.num_qs}).")
    if not 0.0 <= args.offline_ratio < 1.0:
        raise SystemExit(f"--offline-ratio must be in [0, 1) (got {args.offline_ratio}).")
    if args.expert_level not in ("expert", "medium"):
        raise SystemExit(f"Unknown --expert-level {args.expert_level!r}: use expert or medium (the shipped policies).")
    run_name = f"{args.env_id.replace('/', '_')}__{args.exp_name}__{args.algo}-{args.expert_level}__{args.seed}__{int(time.time())}"
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    rng = np.random.default_rng(args.seed)

    env = make_env(args.env_id, args.seed)()
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    data_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
    env_file = args.env_id.replace("/", "-")
    expert_act = load_policy(os.path.join(data_dir, f"{env_file}-{args.expert_level}-policy.npz"))
    demos = None
    if args.demo_path != "none":
        demo_path = args.demo_path or os.path.join(data_dir, f"{env_file}-{args.expert_level}.npz")
        demos = demo_arrays(load_demos(demo_path, env))
        # the env's reward is never used for learning: 0, or the failure label on terminations
        demos["rewards"] = np.array([failure_label(0.0, m, args.gamma, args.terminal_penalty) for m in demos["masks"]], np.float32)
        print(f"demos: {demo_path} ({len(demos['rewards'])} transitions, rewards relabelled: 0, failure label on terminations)")
    log = Logger(run_name, args)

    qref = None
    if args.intervention == "value" and args.algo != "dagger":
        qref, r2, n = fit_qref(load_policy(os.path.join(data_dir, f"{env_file}-expert-policy.npz")), make_env(args.env_id, args.seed)(),
                               args.qref_episodes, args.qref_steps, args.gamma, args.seed)
        print(f"reference critic: Monte-Carlo fit on {n} noisy expert steps, R^2 {r2:.3f}")
        log.log(0, **{"charts/qref_r2": r2})

    actor = Actor(obs_dim, act_dim, args.hidden, env.action_space.low, env.action_space.high).to(device)
    critic = CriticEnsemble(obs_dim, act_dim, args.num_qs, args.hidden, args.critic_layer_norm).to(device)
    target_critic = CriticEnsemble(obs_dim, act_dim, args.num_qs, args.hidden, args.critic_layer_norm).to(device)
    target_critic.load_state_dict(critic.state_dict())
    log_alpha = torch.tensor(np.log(args.init_temperature), dtype=torch.float32, device=device, requires_grad=True)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.actor_lr)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=args.critic_lr)
    temp_opt = torch.optim.Adam([log_alpha], lr=args.temp_lr)
    target_entropy = -act_dim / 2
    buffer = ReplayBuffer(obs_dim, act_dim, min(args.buffer_size, args.total_timesteps))
    n_demo = len(demos["rewards"]) if demos is not None else 0
    demo_buffer = ReplayBuffer(obs_dim, act_dim, n_demo + (args.total_timesteps if args.hil_serl else 0) + 1)
    for i in range(n_demo):
        demo_buffer.add(*(demos[k][i] for k in ("observations", "actions", "rewards", "next_observations", "masks")))
    labels = ReplayBuffer(obs_dim, act_dim, n_demo + args.total_timesteps + 1)  # DAgger family: (s, a_expert)
    for i in range(n_demo):
        labels.add(demos["observations"][i], demos["actions"][i], 0.0, demos["next_observations"][i], 1.0)

    def bc_phase(steps):
        d = labels.arrays()
        for _ in range(steps):
            idx = rng.integers(0, len(d["rewards"]), args.batch_size)
            loss = bc_loss(actor, torch.as_tensor(d["observations"][idx], device=device), torch.as_tensor(d["actions"][idx], device=device))
            actor_opt.zero_grad()
            loss.backward()
            actor_opt.step()
        return loss.item()

    if args.algo != "rlif" and labels.size > 0:
        log.log(0, **{"losses/bc": bc_phase(4 * args.bc_updates)})

    def eval_fn(o):
        with torch.no_grad():
            return actor(torch.as_tensor(o, dtype=torch.float32, device=device).unsqueeze(0), deterministic=True)[0][0].cpu().numpy()

    def q_pair(o, a_learner, a_expert):
        """Q_ref(s, a_learner), Q_ref(s, a_expert) in one forward pass."""
        with torch.no_grad():
            o2 = torch.as_tensor(np.stack([o, o]), dtype=torch.float32)
            return qref(o2, torch.as_tensor(np.stack([a_learner, a_expert]), dtype=torch.float32)).tolist()

    def lab(r, mask):
        return failure_label(r, mask, args.gamma, args.terminal_penalty)

    obs, _ = env.reset(seed=args.seed)
    takeover_left, pending, window = 0, None, []
    n_takeovers, n_expert_steps = 0, 0
    pbar = tqdm(range(args.total_timesteps), desc=f"{args.algo} ({args.expert_level} expert, {args.intervention})")
    for global_step in pbar:
        # ---- act: the learner proposes, the expert may take over ----
        with torch.no_grad():
            o = torch.as_tensor(obs, dtype=torch.float32, device=device).unsqueeze(0)
            a_l = actor(o, deterministic=args.algo != "rlif")[0][0].cpu().numpy()
        a_e = np.clip(expert_act(obs) + args.expert_noise * rng.standard_normal(act_dim), -1, 1).astype(np.float32)
        started = False
        if takeover_left == 0 and args.algo != "dagger":
            if args.intervention == "value":
                started = should_intervene(*q_pair(obs, a_l, a_e), args.intervene_alpha, args.intervene_beta, rng.random())
            else:
                started = rng.random() < args.intervene_prob
            if started:
                takeover_left, n_takeovers = args.takeover_steps, n_takeovers + 1
        if pending is not None:  # the learner's previous transition: -1 if the expert takes over now
            buffer.add(*pending[:2], lab(-1.0 if started else 0.0, pending[3]), *pending[2:])
            pending = None
        expert_acting = takeover_left > 0
        action = a_e if expert_acting else a_l
        next_obs, reward, term, trunc, info = env.step(action)
        mask, done = 1.0 - float(term), term or trunc
        window.append(float(expert_acting))
        if expert_acting:
            takeover_left -= 1
            n_expert_steps += 1
            labels.add(obs, a_e, 0.0, next_obs, mask)  # hg-dagger: takeover labels
            if args.hil_serl:
                buffer.add(obs, a_e, lab(0.0, mask), next_obs, mask)
                demo_buffer.add(obs, a_e, lab(0.0, mask), next_obs, mask)
            elif takeover_left == 0 or done:
                buffer.add(obs, a_e, lab(0.0, mask), next_obs, mask)  # only the takeover's last expert step is stored
        else:
            if args.algo == "dagger":
                labels.add(obs, a_e, 0.0, next_obs, mask)  # the expert labels every visited state
            pending = (obs, a_l, next_obs, mask)
        obs = next_obs
        if done:
            if pending is not None:
                buffer.add(*pending[:2], lab(0.0, pending[3]), *pending[2:])
                pending = None
            log.log(global_step, **{"charts/episodic_return": float(info["episode"]["r"])})
            obs, _ = env.reset()
            takeover_left = 0
        if (global_step + 1) % min(1000, args.eval_every) == 0:
            log.log(global_step + 1, **{"charts/intervention_rate": float(np.mean(window)), "charts/takeovers": n_takeovers,
                                        "charts/expert_steps": n_expert_steps})
            window = []

        # ---- learn ----
        if args.algo != "rlif":
            if (global_step + 1) % args.bc_every == 0:
                log.log(global_step + 1, **{"losses/bc": bc_phase(args.bc_updates), "charts/labels": labels.size})
        elif global_step >= args.start_training and buffer.size > 0:
            offline = demo_buffer.arrays() if demo_buffer.size > 0 else None
            batch = {k: v.to(device) for k, v in sample_batch(buffer.arrays(), offline, args.batch_size, args.utd,
                                                              args.offline_ratio if offline is not None else 0.0, rng).items()}
            alpha = log_alpha.exp().detach()
            for i in range(args.utd):
                b = {k: v[i] for k, v in batch.items()}
                with torch.no_grad():
                    next_a, next_logp = actor(b["next_observations"])
                    q_next = subset_min_target(target_critic(b["next_observations"], next_a), args.num_min_qs)
                    y = td_target(b["rewards"], b["masks"], q_next, next_logp, alpha, args.gamma, args.backup_entropy)
                qs = critic(b["observations"], b["actions"])
                c_loss = critic_loss(qs, y)
                critic_opt.zero_grad()
                c_loss.backward()
                critic_opt.step()
                with torch.no_grad():
                    for p, tp in zip(critic.parameters(), target_critic.parameters()):
                        tp.lerp_(p, args.tau)
            a_pi, logp = actor(b["observations"])
            a_loss = actor_loss(critic(b["observations"], a_pi), logp, alpha)
            actor_opt.zero_grad()
            a_loss.backward()
            actor_opt.step()
            t_loss = temperature_loss(log_alpha, logp, target_entropy)
            temp_opt.zero_grad()
            t_loss.backward()
            temp_opt.step()
            if (global_step - args.start_training) % 1000 == 0:
                log.log(global_step, **{"losses/critic": c_loss.item(), "losses/actor": a_loss.item(),
                                        "losses/temperature": t_loss.item(), "charts/alpha": alpha.item(),
                                        "charts/q_mean": qs.mean().item(), "charts/entropy": -logp.mean().item(),
                                        "charts/offline_fraction": b["is_offline"].mean().item()})

        if (global_step + 1) % args.eval_every == 0:
            ret, succ = evaluate(eval_fn, args.env_id, args.eval_episodes, 10_000 + args.seed)
            log.log(global_step + 1, **{"eval/return": ret, "eval/success": succ})
            pbar.set_postfix(eval_return=f"{ret:.0f}", takeovers=n_takeovers)

    model_path = os.path.join(log.dir, "model.pt")
    torch.save({"actor": actor.state_dict(), "critic": critic.state_dict(), "log_alpha": log_alpha.detach(),
                "qref": qref.state_dict() if qref is not None else None, "args": vars(args)}, model_path)
    log.close()
    print(f"takeovers {n_takeovers}, expert steps {n_expert_steps} of {args.total_timesteps}")
    print(f"model: {model_path}; metrics: {os.path.join(log.dir, 'metrics.csv')} (TensorBoard: tensorboard --logdir runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""RLPD: SAC with offline data, LayerNorm critic ensemble, random-subset min target, high update-to-data ratio.

Paper: Ball, Smith, Kostrikov, Levine, "Efficient Online Reinforcement Learning with Offline Data", ICML 2023,
arXiv 2302.02948; official code ikostrikov/rlpd (JAX; read for the defaults, not copied). How this file differs
from the official code: the fidelity table at the end of the file.

What RLPD adds to SAC (Sec. 3 of the paper), and where it is in this file:
    Design choice 1, symmetric sampling: every batch is half online replay, half offline data
        (--offline-ratio 0.5; 0 gives SAC from scratch on the same code)         -> sample_batch()
    Design choice 2, LayerNorm in the critic (Dense, then LayerNorm, then ReLU)  -> CriticEnsemble
    Design choice 3, sample efficiency: UTD G (--utd 20), an ensemble of E critics (--num-qs 10), and the TD
        target from the min over a random subset of Z target critics (--num-min-qs 2), as in REDQ:
        y = r + gamma * mask * ( min_{j in Z} Q'_j(s', a') - alpha log pi(a'|s') ),  a' ~ pi(.|s')
                                                                                 -> subset_min_target(), td_target()
    Critic loss: mean over the E critics and the batch of (Q_i(s, a) - y)^2      -> critic_loss()
    Actor loss (SAC): E_s[ alpha log pi(a~|s) - mean_i Q_i(s, a~) ],  a~ ~ pi(.|s)  -> actor_loss()
    Temperature: loss alpha * (-log pi - target_entropy), target entropy -|A|/2  -> temperature_loss()
    One critic step then Polyak; one actor, one temperature step  -> critic_update(), actor_temperature_update()
    Loop per env step: one batch of utd x batch_size; utd critic steps (Polyak after each), then one actor
    and one temperature step on the last slice (the official code's order).      -> main()
The ensemble is one module with the ensemble as a leading dimension (batched matmul, no loop over critics).
Masks are 0 only on termination, never on truncation. Dataset actions are clipped to +-(1 - 1e-5) -> demo_arrays().

Run:
    python rlpd.py --env-id Hopper-v4                              # medium demos, the paper's defaults (UTD 20, E 10)
    python rlpd.py --env-id Hopper-v4 --offline-ratio 0            # SAC from scratch, same code (with E 10, UTD 20)
    python rlpd.py --env-id Walker2d-v4 --utd 1 --num-qs 2 --hidden 128 --batch-size 128   # the CPU benchmark setting
    python rlpd.py --env-id Hopper-v4 --compile                    # the same updates through torch.compile

--compile wraps critic_update() and actor_temperature_update() in torch.compile (on CUDA with CUDA graphs,
mode "reduce-overhead"; not tried here, no GPU). Compiling costs tens of seconds on a CPU, so turn it on for runs of
more than a few thousand updates; benchmarks/throughput/ has the measured speed-ups.
"""

import csv
import os
import random
import signal
import sys
import time
from dataclasses import dataclass

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
    exp_name: str = os.path.basename(__file__)[: -len(".py")]  # the name of this experiment
    seed: int = 1  # seed of the experiment
    torch_deterministic: bool = True  # torch.backends.cudnn.deterministic
    cuda: bool = False  # use CUDA if available
    threads: int = 1  # torch CPU threads
    env_id: str = "Hopper-v4"  # gymnasium MuJoCo id, or metaworld/<task>-v3
    demo_path: str = ""  # offline data (.npz or minari:<id>); empty: data/<env-id>-medium.npz; none: no demos
    total_timesteps: int = 250_000  # online env steps
    buffer_size: int = 1_000_000  # online replay capacity
    start_training: int = 5000  # uniform-random env steps before the first update
    batch_size: int = 256  # minibatch of one critic step
    utd: int = 20  # critic updates per env step (update-to-data ratio G)
    num_qs: int = 10  # critic ensemble size E
    num_min_qs: int = 2  # size Z of the random subset of target critics the TD target takes the min over
    offline_ratio: float = 0.5  # fraction of every batch drawn from the offline data (0: SAC from scratch)
    hidden: int = 256  # width of the 2 hidden layers of actor and critics
    critic_layer_norm: bool = True  # LayerNorm after every hidden critic layer
    actor_lr: float = 3e-4  # actor learning rate
    critic_lr: float = 3e-4  # critic learning rate
    temp_lr: float = 3e-4  # temperature learning rate
    gamma: float = 0.99  # discount
    tau: float = 0.005  # Polyak rate of the target critics (after every critic step)
    init_temperature: float = 1.0  # initial alpha
    backup_entropy: bool = True  # subtract alpha log pi(a'|s') in the TD target
    compile: bool = False  # torch.compile the two update steps (10-30 s to compile on a CPU: for long runs)
    eval_every: int = 5000  # env steps between evaluations
    eval_episodes: int = 10  # deterministic evaluation episodes

    def __post_init__(self):
        if not 1 <= self.num_min_qs <= self.num_qs:
            raise SystemExit(f"--num-min-qs ({self.num_min_qs}) must be between 1 and --num-qs ({self.num_qs}).")
        if not 0.0 <= self.offline_ratio < 1.0:
            raise SystemExit(f"--offline-ratio must be in [0, 1) (got {self.offline_ratio}).")


# ----------------------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------------------
class EnsembleLinear(nn.Module):
    """E independent linear layers as one batched matmul: (E, B, inp) -> (E, B, out)."""

    def __init__(self, num_members, inp, out):
        super().__init__()
        bound = np.sqrt(6 / (inp + out))  # xavier_uniform per member, zero bias (official: rlpd/networks/mlp.py)
        self.weight = nn.Parameter(torch.empty(num_members, inp, out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(num_members, 1, out))

    def forward(self, x):
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over features with a separate affine per member: (E, B, h) -> (E, B, h)."""

    def __init__(self, num_members, h):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_members, 1, h))
        self.bias = nn.Parameter(torch.zeros(num_members, 1, h))

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:]) * self.weight + self.bias


class CriticEnsemble(nn.Module):
    """E critics Q_i(s, a), each Dense -> LayerNorm -> ReLU (x2) -> Dense(1), in one batched module."""

    def __init__(self, obs_dim, act_dim, num_qs, hidden=256, layer_norm=True):
        super().__init__()
        self.num_qs = num_qs
        norm = (lambda: EnsembleLayerNorm(num_qs, hidden)) if layer_norm else nn.Identity
        self.net = nn.Sequential(EnsembleLinear(num_qs, obs_dim + act_dim, hidden), norm(), nn.ReLU(),
                                 EnsembleLinear(num_qs, hidden, hidden), norm(), nn.ReLU(),
                                 EnsembleLinear(num_qs, hidden, 1))

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
        for m in self.modules():  # xavier_uniform kernels, zero biases, output layers included (official init)
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, obs, deterministic=False):
        """Returns (action, log pi(action|obs) of shape (B, 1))."""
        h = self.trunk(obs)
        mean, log_std = self.mean(h), self.log_std(h).clamp(-20, 2)
        u = mean if deterministic else mean + log_std.exp() * torch.randn_like(mean)
        a = torch.tanh(u)
        log_det = torch.log(self.scale * (1 - a.pow(2)) + 1e-6)  # log |d action / d u| of the squash and rescale
        logp = torch.distributions.Normal(mean, log_std.exp()).log_prob(u) - log_det
        return a * self.scale + self.center, logp.sum(-1, keepdim=True)


# ----------------------------------------------------------------------------------------------------------
# Losses (pure functions; tests call them) and the two update steps
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


def critic_update(critic, target_critic, actor, critic_opt, critic_params, target_params, b, alpha, args):
    """Eq. (TD) of SAC with RLPD's subset-min target on one minibatch b, one Adam step on the E critics, then Polyak
    of every target parameter in one foreach op. Returns (loss, mean Q) as tensors: no host sync outside logging."""
    with torch.no_grad():
        next_a, next_logp = actor(b["next_observations"])
        q_next = subset_min_target(target_critic(b["next_observations"], next_a), args.num_min_qs)
        y = td_target(b["rewards"], b["masks"], q_next, next_logp, alpha, args.gamma, args.backup_entropy)
    qs = critic(b["observations"], b["actions"])
    loss = critic_loss(qs, y)
    critic_opt.zero_grad()
    loss.backward()
    critic_opt.step()
    with torch.no_grad():
        torch._foreach_lerp_(target_params, critic_params, args.tau)  # target <- target + tau (online - target)
    return loss.detach(), qs.detach().mean()


def actor_temperature_update(actor, critic, actor_opt, log_alpha, temp_opt, obs, alpha, target_entropy):
    """One actor step (mean over the ensemble) and one temperature step; returns (actor loss, temperature loss,
    mean log pi) as tensors. The critics' gradients from this step are cleared by the next critic step."""
    a_pi, logp = actor(obs)
    a_loss = actor_loss(critic(obs, a_pi), logp, alpha)
    actor_opt.zero_grad()
    a_loss.backward()
    actor_opt.step()
    t_loss = temperature_loss(log_alpha, logp, target_entropy)
    temp_opt.zero_grad()
    t_loss.backward()
    temp_opt.step()
    return a_loss.detach(), t_loss.detach(), logp.detach().mean()


# ----------------------------------------------------------------------------------------------------------
# Data: the online replay buffer, the offline data in its layout, symmetric sampling
# ----------------------------------------------------------------------------------------------------------
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
        is_offline = np.full((utd, n), src is offline, np.float32)
        parts.append({k: v[idx] for k, v in src.items()} | {"is_offline": is_offline})
    return {k: torch.as_tensor(np.concatenate([p[k] for p in parts], axis=1)) for k in parts[0]}


def act(actor, obs, device, deterministic=False):
    """The actor's action for one numpy observation: a sample, or the mean of the policy (evaluation)."""
    with torch.no_grad():
        obs = torch.as_tensor(obs, dtype=torch.float32, device=device).unsqueeze(0)
        return actor(obs, deterministic=deterministic)[0][0].cpu().numpy()


def main():
    args = tyro.cli(Args)  # Args.__post_init__ checks the flags
    offline_ratio = 0.0 if args.demo_path == "none" else args.offline_ratio  # what the run really mixes in
    run_name = f"{args.env_id.replace('/', '_')}__{args.exp_name}__off{offline_ratio}__{args.seed}__{int(time.time())}"
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    rng = np.random.default_rng(args.seed)

    env = make_env(args.env_id, args.seed)()
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    offline = None  # --offline-ratio 0 or --demo-path none: SAC from scratch on the same code (the baseline)
    if args.offline_ratio > 0 and args.demo_path != "none":
        data_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
        demo_path = args.demo_path or os.path.join(data_dir, f"{args.env_id.replace('/', '-')}-medium.npz")
        offline = demo_arrays(load_demos(demo_path, env))
        print(f"offline data: {demo_path} ({len(offline['rewards'])} transitions), offline ratio {args.offline_ratio}")
    log = Logger(run_name, args)

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

    critic_params, target_params = list(critic.parameters()), list(target_critic.parameters())

    def critic_step(b, alpha):
        """One critic step on the minibatch b, then Polyak (the unit that --compile compiles)."""
        return critic_update(critic, target_critic, actor, critic_opt, critic_params, target_params, b, alpha, args)

    def actor_step(obs, alpha):
        """One actor step and one temperature step on the observations of the last minibatch."""
        return actor_temperature_update(actor, critic, actor_opt, log_alpha, temp_opt, obs, alpha, target_entropy)

    if args.compile:  # the same two functions, compiled on first use (CUDA: CUDA graphs remove the launch overhead)
        mode = "reduce-overhead" if device.type == "cuda" else None
        critic_step, actor_step = torch.compile(critic_step, mode=mode), torch.compile(actor_step, mode=mode)

    obs, _ = env.reset(seed=args.seed)
    pbar = tqdm(range(args.total_timesteps), desc=f"RLPD utd={args.utd} E={args.num_qs}")
    for global_step in log.steps(pbar):  # stops early on SIGINT/SIGTERM (Logger)
        # ---- act ----
        if global_step < args.start_training:
            action = env.action_space.sample()
        else:
            action = act(actor, obs, device)
        next_obs, reward, term, trunc, info = env.step(action)
        buffer.add(obs, action, reward, next_obs, 1.0 - float(term))  # bootstrap through truncations
        obs = next_obs
        if term or trunc:
            log.log(global_step, **{"charts/episodic_return": float(info["episode"]["r"])})
            obs, _ = env.reset()

        # ---- learn: utd critic steps, then one actor and one temperature step ----
        if global_step >= args.start_training:
            batch = {k: v.to(device) for k, v in sample_batch(buffer.arrays(), offline, args.batch_size, args.utd,
                                                              args.offline_ratio, rng).items()}
            alpha = log_alpha.exp().detach()
            for i in range(args.utd):
                c_loss, q_mean = critic_step({k: v[i] for k, v in batch.items()}, alpha)
            b = {k: v[-1] for k, v in batch.items()}
            a_loss, t_loss, logp_mean = actor_step(b["observations"], alpha)
            if (global_step - args.start_training) % 1000 == 0:
                log.log(global_step, **{"losses/critic": c_loss.item(), "losses/actor": a_loss.item(),
                                        "losses/temperature": t_loss.item(), "charts/alpha": alpha.item(),
                                        "charts/q_mean": q_mean.item(), "charts/entropy": -logp_mean.item(),
                                        "charts/offline_fraction": b["is_offline"].mean().item()})

        if (global_step + 1) % args.eval_every == 0:
            ret, succ = evaluate(lambda o: act(actor, o, device, deterministic=True), args.env_id, args.eval_episodes,
                                 10_000 + args.seed)
            log.log(global_step + 1, **{"eval/return": ret, "eval/success": succ})
            pbar.set_postfix(eval_return=f"{ret:.0f}")

    return log.finish({"actor": actor.state_dict(), "critic": critic.state_dict(), "log_alpha": log_alpha.detach()})


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


# Fidelity to the official code (ikostrikov/rlpd, read for this table):
# | design choice | official (source) | this file | why different |
# |---|---|---|---|
# | critic layer | Dense -> LayerNorm -> ReLU, x2, Dense(1) (networks/mlp.py, state_action_value.py) | same | - |
# | ensemble / subset | num_qs 10, num_min_qs 2 (configs/rlpd_config.py) | same defaults | CPU benchmark: E 2 |
# | UTD | --utd_ratio 20 in the README's commands (flag default 1) | --utd 20 | CPU benchmark: 1 |
# | batch / mixing | 256, offline_ratio 0.5, offline and online parts of every slice (train_finetuning.py) | same | - |
# | optimiser | Adam 3e-4 actor, critic, temperature; no weight decay (td_config.py, sac_config.py) | same | - |
# | discount / Polyak | 0.99 / tau 0.005 after every critic step (td_config.py, agents/sac/sac_learner.py) | same | - |
# | temperature | init 1.0, target entropy -|A|/2, loss on alpha (sac_learner.py) | same | - |
# | entropy backup | backup_entropy True (sac_config.py) | same | - |
# | actor | 2 x 256 ReLU, tanh Normal, state-dependent log std clipped to [-20, 2] (tanh_normal.py) | same | - |
# | actor loss | alpha log pi - mean over the ensemble of Q (sac_learner.py) | same | - |
# | update order | utd critic steps, then one actor + temperature step on the last slice (sac_learner.update) | same |
#   - |
# | initialisation | xavier_uniform kernels, zero biases, output layers included (networks/mlp.py, tanh_normal.py) |
#   same | - |
# | masks | 1 - terminal; truncations bootstrap (train_finetuning.py) | same | - |
# | dataset actions | clipped to +-(1 - 1e-5) (train_finetuning.py) | same | - |
# | start_training | 5000 in the README's commands (flag default 1e4) | 5000 | - |
# | evaluation | 10 deterministic episodes every 5000 steps (train_finetuning.py) | same | - |
# | offline data | D4RL datasets, about 1M transitions each (e.g. hopper-medium-v2) | data/<env>-medium.npz:
#   20 medium episodes from this repo's PPO policies, 7,524 transitions on Hopper (7,929 Walker2d, 20,000 HalfCheetah),
#   under 1% of D4RL's | nothing is downloaded |
# | framework | JAX, jit-compiled update | PyTorch, eager (--compile optional) | - |


if __name__ == "__main__":
    sys.exit(main())

"""IN-RIL with gradient surgery: one policy network, interleaved 1 IL : m RL updates, dynamic m(t).

Paper: Gao et al. 2025, "IN-RIL: Interleaved Reinforcement and Imitation Learning for Policy Fine-Tuning",
arXiv 2505.10442. There is no public code; this file is a from-scratch implementation (see README.md).

Equations -> code
    Stage 1, BC pre-training, L_IL = E_{(s,a)~D_exp}[-log pi(a|s)]           -> il_loss(), stage 1 in main()
    Eq. (interleaved update, Sec. 4.1): one cycle t is one IL step
        theta <- theta - alpha_IL grad L_IL, then m(t) RL steps theta <- theta - alpha_RL grad L_RL
        (m = infinity is RL-only fine-tuning)                                  -> the update loop in main()
    L_RL: PPO's clipped surrogate (Schulman et al. 2017) + value loss, GAE     -> ppo_loss(), gae()
    Gradient surgery ("separating possibly conflicting gradient updates in orthogonal subspaces", Sec. 4.3):
        PCGrad (Yu et al. 2020): if g_RL . g_IL < 0, g_RL <- g_RL - (g_RL . g_IL / ||g_IL||^2) g_IL
        We project the RL gradient off the IL gradient at every RL step (measured on the current demo
        minibatch), so an RL step never undoes imitation to first order; the IL step is not projected.
                                                                               -> project_conflicting()
    rho(t) = cos(grad L_IL, grad L_RL) (Assumption 1 / Theorem 1)              -> grad_cosine()
    Dynamic m(t) (--dynamic-m). The paper ties the best ratio to rho but does not publish the rule. We use
        rho_bar <- 0.9 rho_bar + 0.1 rho(t)       (EMA over RL steps)
        m(t) = clip(round(m * 3^(-rho_bar)), m_min, m_max)
      i.e. aligned gradients (rho -> 1) let IL run up to 3x more often (m/3), conflicting ones (rho -> -1)
      make IL up to 3x rarer (3m), which is the paper's direction: the more IL fights RL, the more RL steps
      per IL step.                                                             -> dynamic_m()

Baselines on the same code path (--il-mode): `interleave` (IN-RIL), `none` (RL-only fine-tuning, the
IL-then-RL standard), `regularize` (one loss L_RL + bc_coef * L_IL per step, no interleaving).
Surgery is on by default (--pcgrad); --no-pcgrad gives plain interleaving.

Policy: Gaussian MLP, mean net 2 x 256 ReLU, state-independent log std. In L_IL the std is detached
(sigma-weighted MSE on the mean), so imitation never shrinks the exploration noise; PPO alone moves the std.
Observations are normalised by the demos' mean/std, fixed and saved with the model.

Run:
    python inril_pcgrad.py --env-id Hopper-v4 --m 10
    python inril_pcgrad.py --env-id Hopper-v4 --il-mode none          # RL-only fine-tuning baseline
    python inril_pcgrad.py --env-id Walker2d-v4 --dynamic-m
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
    """demonstrations (.npz or minari:<id>); empty: data/<env-id>-medium.npz next to this file"""
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
    """policy learning rate (RL and IL steps)"""
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
    action_std: float = 0.5
    """initial exploration std in action units"""
    critic_warmup_iters: int = 0
    """rollouts at the start that train only the value net (policy frozen)"""
    il_mode: Literal["interleave", "none", "regularize"] = "interleave"
    """interleave: IN-RIL; none: RL-only fine-tuning; regularize: L_RL + bc_coef * L_IL every step"""
    m: int = 10
    """RL gradient steps per IL gradient step"""
    dynamic_m: bool = False
    """adapt m(t) from rho(t) (see the docstring)"""
    m_min: int = 2
    """lower bound of m(t)"""
    m_max: int = 30
    """upper bound of m(t)"""
    pcgrad: bool = True
    """project conflicting RL gradients off the IL gradient"""
    bc_coef: float = 0.1
    """lambda of the regularisation baseline"""
    il_batch_size: int = 256
    """demo minibatch of an IL step (and of the gradient measured for surgery / rho)"""
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


def chunk_targets(demos, k):
    """(N, k * act_dim): the k demo actions from each step on, the episode's last action repeated past its end."""
    ends = np.logical_or(demos["terminations"], demos["truncations"])
    ep_end = np.zeros(len(ends), np.int64)
    end = len(ends) - 1
    for i in range(len(ends) - 1, -1, -1):
        if ends[i]:
            end = i
        ep_end[i] = end
    idx = np.minimum(np.arange(len(ends))[:, None] + np.arange(k)[None], ep_end[:, None])
    return demos["actions"][idx].reshape(len(ends), -1)


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


def mlp(inp, out, hidden=256, out_std=1.0):
    last = nn.Linear(hidden, out)
    nn.init.orthogonal_(last.weight, out_std)
    nn.init.zeros_(last.bias)
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), last)


class Policy(nn.Module):
    """Gaussian policy: mean = mu(s) (2 x 256 ReLU), state-independent log std; obs normalised inside."""

    def __init__(self, obs_dim, act_dim, obs_mean, obs_std, action_std):
        super().__init__()
        self.register_buffer("obs_mean", torch.as_tensor(obs_mean))
        self.register_buffer("obs_std", torch.as_tensor(obs_std))
        self.mu = mlp(obs_dim, act_dim, out_std=0.01)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(np.log(action_std))))

    def norm(self, obs):
        return ((obs - self.obs_mean) / self.obs_std).clamp(-10, 10)

    def dist(self, obs):
        return torch.distributions.Normal(self.mu(self.norm(obs)), self.log_std.exp())


class Critic(nn.Module):
    def __init__(self, obs_dim, obs_mean, obs_std):
        super().__init__()
        self.register_buffer("obs_mean", torch.as_tensor(obs_mean))
        self.register_buffer("obs_std", torch.as_tensor(obs_std))
        self.v = mlp(obs_dim, 1)

    def forward(self, obs):
        return self.v(((obs - self.obs_mean) / self.obs_std).clamp(-10, 10)).squeeze(-1)


# ----------------------------------------------------------------------------------------------------------
# Losses and gradient tools (pure functions; tests call them)
# ----------------------------------------------------------------------------------------------------------
def il_loss(policy: Policy, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """L_IL = E[-log pi(a|s)] with the std detached (a sigma-weighted MSE on the mean); scalar."""
    mean, std = policy.mu(policy.norm(obs)), policy.log_std.exp().detach()
    return -torch.distributions.Normal(mean, std).log_prob(act).sum(-1).mean()


def ppo_loss(new_logp, old_logp, adv, clip_coef):
    """PPO's clipped surrogate, to be minimised; advantages normalised per minibatch. Returns (loss, approx_kl)."""
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    log_ratio = new_logp - old_logp
    ratio = log_ratio.exp()
    loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip_coef, 1 + clip_coef)).mean()
    approx_kl = ((ratio - 1) - log_ratio).mean()
    return loss, approx_kl


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
    """rho = cos(g_a, g_b)."""
    return float(torch.dot(g_a, g_b) / (g_a.norm() * g_b.norm() + 1e-12))


def project_conflicting(g: torch.Tensor, g_ref: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """PCGrad: if g . g_ref < 0, remove g's component along g_ref (onto g_ref's normal plane); else g as is."""
    dot = torch.dot(g, g_ref)
    if dot >= 0:
        return g, False
    return g - dot / (g_ref.norm() ** 2 + 1e-12) * g_ref, True


def dynamic_m(m: int, rho_bar: float, m_min: int, m_max: int) -> int:
    """m(t) = clip(round(m * 3^(-rho_bar)), m_min, m_max): conflict (rho < 0) -> more RL steps per IL step."""
    return int(np.clip(round(m * 3.0 ** (-rho_bar)), m_min, m_max))


def set_flat_grad(params, flat):
    i = 0
    for p in params:
        n = p.numel()
        p.grad = flat[i:i + n].view_as(p).clone()
        i += n


def main():
    args = tyro.cli(Args)
    if args.il_mode != "interleave" and args.dynamic_m:
        raise SystemExit("--dynamic-m needs --il-mode interleave.")
    if args.m < 1:
        raise SystemExit(f"--m must be at least 1 (got {args.m}); use --il-mode none for RL-only fine-tuning.")
    run_name = f"{args.env_id.replace('/', '_')}__{args.exp_name}__{args.il_mode}__{args.seed}__{int(time.time())}"
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    k = args.chunk_size

    # ---- env and demos ----
    def env_thunk(i):
        return lambda: ChunkedActions(make_env(args.env_id, args.seed + i)(), k) if k > 1 else make_env(args.env_id, args.seed + i)()

    envs = gym.vector.SyncVectorEnv([env_thunk(i) for i in range(args.num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    data_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
    demo_path = args.demo_path or os.path.join(data_dir, f"{args.env_id.replace('/', '-')}-medium.npz")
    demos = load_demos(demo_path, make_env(args.env_id, args.seed)())
    obs_dim, act_dim = demos["observations"].shape[1], demos["actions"].shape[1] * k
    obs_mean, obs_std = demos["observations"].mean(0), demos["observations"].std(0) + 1e-3
    D_obs = torch.as_tensor(demos["observations"], device=device)
    D_act = torch.as_tensor(chunk_targets(demos, k), device=device)
    n_demo = len(D_obs)
    log = Logger(run_name, args)

    policy = Policy(obs_dim, act_dim, obs_mean, obs_std, args.action_std).to(device)
    critic = Critic(obs_dim, obs_mean, obs_std).to(device)
    actor_params = list(policy.parameters())

    # ---- Stage 1: behaviour cloning until the loss plateaus ----
    bc_opt = torch.optim.Adam(policy.mu.parameters(), lr=args.bc_lr)
    best, since, window = float("inf"), 0, []
    for step in (bar := tqdm(range(args.bc_steps), desc="stage 1: BC", leave=False)):
        idx = torch.randint(n_demo, (args.bc_batch_size,), device=device)
        loss = ((policy.mu(policy.norm(D_obs[idx])) - D_act[idx]) ** 2).sum(-1).mean()
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

    def act_det(o):
        with torch.no_grad():
            return policy.mu(policy.norm(torch.as_tensor(o, dtype=torch.float32, device=device))).cpu().numpy()

    def eval_fn(o):
        return act_det(o)[: act_dim // k]  # deterministic, first action of the chunk (closed loop)

    bc_return, bc_success = evaluate(eval_fn, args.env_id, args.eval_episodes, 10_000 + args.seed)
    print(f"stage 1: BC on {demo_path} ({n_demo} transitions) -> eval/return {bc_return:.1f}")
    log.log(0, **{"eval/return": bc_return, "eval/success": bc_success})

    # ---- Stage 2: PPO fine-tuning, 1 IL step every m(t) RL steps ----
    actor_opt = torch.optim.Adam(actor_params, lr=args.actor_lr, eps=1e-5)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=args.critic_lr, eps=1e-5)
    N, T = args.num_envs, args.num_steps
    batch, mb = N * T, N * T // args.num_minibatches
    buf = {k_: torch.zeros((T, N) + s, device=device) for k_, s in
           (("obs", (obs_dim,)), ("act", (act_dim,)), ("logp", ()), ("rew", ()), ("val", ()), ("done", ()), ("next_val", ()))}
    ret_mean, ret_var, ret_count, disc_ret = 0.0, 1.0, 1e-4, np.zeros(N)  # reward scaling (NormalizeReward)
    obs, _ = envs.reset(seed=args.seed)
    global_step, rl_steps, m_t, rho_bar, next_eval = 0, 0, args.m, 0.0, args.eval_every
    since_il, conflicts, measured = 0, 0, 0
    num_iters = max(1, args.total_timesteps // (batch * k))
    pbar = tqdm(total=num_iters * batch * k, desc=f"stage 2: {args.il_mode}")
    for it in range(num_iters):
        for t in range(T):
            o = torch.as_tensor(obs, dtype=torch.float32, device=device)
            with torch.no_grad():
                d = policy.dist(o)
                a = d.sample()
                buf["logp"][t], buf["val"][t] = d.log_prob(a).sum(-1), critic(o)
            obs, r, term, trunc, info = envs.step(a.cpu().numpy())
            global_step += N * k
            pbar.update(N * k)
            disc_ret = disc_ret * args.gamma + r
            bm, bv = disc_ret.mean(), disc_ret.var()
            delta, tot = bm - ret_mean, ret_count + N
            ret_var = (ret_var * ret_count + bv * N + delta**2 * ret_count * N / tot) / tot
            ret_mean, ret_count = ret_mean + delta * N / tot, tot
            ended = np.logical_or(term, trunc)
            nxt = obs.copy()
            if ended.any():
                nxt[ended] = np.stack(info["final_obs"][ended])
                disc_ret[ended] = 0.0
                for i in np.where(ended)[0]:
                    log.log(global_step, **{"charts/episodic_return": float(info["final_info"]["episode"]["r"][i])})
            with torch.no_grad():
                not_term = torch.as_tensor(1.0 - term, dtype=torch.float32, device=device)
                buf["next_val"][t] = critic(torch.as_tensor(nxt, dtype=torch.float32, device=device)) * not_term
            buf["obs"][t], buf["act"][t] = o, a
            buf["rew"][t] = torch.as_tensor(np.clip(r / np.sqrt(ret_var + 1e-8), -10, 10), device=device)
            buf["done"][t] = torch.as_tensor(ended.astype(np.float32), device=device)
            if global_step >= next_eval:
                next_eval += args.eval_every
                ret, succ = evaluate(eval_fn, args.env_id, args.eval_episodes, 10_000 + args.seed)
                log.log(global_step, **{"eval/return": ret, "eval/success": succ})
                pbar.set_postfix(eval_return=f"{ret:.0f}", m=m_t)

        adv, ret = gae(buf["rew"], buf["val"], buf["next_val"], buf["done"], args.gamma, args.gae_lambda)
        b = {k_: v.reshape((batch,) + v.shape[2:]) for k_, v in buf.items()}
        b_adv, b_ret = adv.reshape(-1), ret.reshape(-1)
        warmup = it < args.critic_warmup_iters
        kls, rhos, il_losses, pg_losses = [], [], [], []
        for _epoch in range(args.update_epochs):
            perm = torch.randperm(batch, device=device)
            for s in range(0, batch, mb):
                idx = perm[s:s + mb]
                v_loss = 0.5 * ((critic(b["obs"][idx]) - b_ret[idx]) ** 2).mean()
                critic_opt.zero_grad()
                v_loss.backward()
                nn.utils.clip_grad_norm_(critic.parameters(), args.max_grad_norm)
                critic_opt.step()
                if warmup:
                    continue
                new_logp = policy.dist(b["obs"][idx]).log_prob(b["act"][idx]).sum(-1)
                pg_loss, kl = ppo_loss(new_logp, b["logp"][idx], b_adv[idx], args.clip_coef)
                kls.append(kl.item())
                pg_losses.append(pg_loss.item())
                didx = torch.randint(n_demo, (args.il_batch_size,), device=device)
                if args.il_mode == "regularize":  # baseline: one combined loss
                    loss = pg_loss + args.bc_coef * il_loss(policy, D_obs[didx], D_act[didx])
                    actor_opt.zero_grad()
                    loss.backward()
                elif args.il_mode == "interleave" and (args.pcgrad or args.dynamic_m):
                    l_il = il_loss(policy, D_obs[didx], D_act[didx])
                    g_rl, g_il = flat_grad(pg_loss, actor_params), flat_grad(l_il, actor_params)
                    rho = grad_cosine(g_il, g_rl)
                    rhos.append(rho)
                    rho_bar = 0.9 * rho_bar + 0.1 * rho
                    if args.pcgrad:
                        g_rl, hit = project_conflicting(g_rl, g_il)
                        conflicts, measured = conflicts + hit, measured + 1
                    set_flat_grad(actor_params, g_rl)
                else:
                    actor_opt.zero_grad()
                    pg_loss.backward()
                nn.utils.clip_grad_norm_(actor_params, args.max_grad_norm)
                actor_opt.step()
                rl_steps += 1
                since_il += 1
                if args.il_mode == "interleave" and since_il >= m_t:  # one IL step after m(t) RL steps
                    didx = torch.randint(n_demo, (args.il_batch_size,), device=device)
                    l_il = il_loss(policy, D_obs[didx], D_act[didx])
                    actor_opt.zero_grad()
                    l_il.backward()
                    nn.utils.clip_grad_norm_(actor_params, args.max_grad_norm)
                    actor_opt.step()
                    il_losses.append(l_il.item())
                    since_il = 0
                    if args.dynamic_m:
                        m_t = dynamic_m(args.m, rho_bar, args.m_min, args.m_max)
            if kls and np.mean(kls[-args.num_minibatches:]) > args.target_kl:
                break
        with torch.no_grad():
            didx = torch.randint(n_demo, (1024,), device=device)
            demo_mse = ((policy.mu(policy.norm(D_obs[didx])) - D_act[didx]) ** 2).sum(-1).mean().item()
        scalars = {"losses/value": v_loss.item(), "losses/demo_mse": demo_mse, "charts/m": m_t,
                   "charts/action_std": policy.log_std.exp().mean().item(), "charts/rl_steps": rl_steps}
        if pg_losses:
            scalars.update({"losses/policy": float(np.mean(pg_losses)), "losses/approx_kl": float(np.mean(kls))})
        if il_losses:
            scalars["losses/il"] = float(np.mean(il_losses))
        if rhos:
            scalars.update({"charts/rho": float(np.mean(rhos)), "charts/rho_bar": rho_bar})
        if measured:
            scalars["charts/conflict_rate"] = conflicts / measured
        log.log(global_step, **scalars)
    pbar.close()

    final_return, final_success = evaluate(eval_fn, args.env_id, args.eval_episodes, 10_000 + args.seed)
    log.log(global_step, **{"eval/return": final_return, "eval/success": final_success})
    model_path = os.path.join(log.dir, "model.pt")
    torch.save({"policy": policy.state_dict(), "critic": critic.state_dict(), "args": vars(args)}, model_path)
    log.close()
    print(f"BC start {bc_return:.1f} -> final eval/return {final_return:.1f} after {global_step} env steps")
    print(f"model: {model_path}; metrics: {os.path.join(log.dir, 'metrics.csv')} (TensorBoard: tensorboard --logdir runs)")
    envs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

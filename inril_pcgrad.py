"""IN-RIL with gradient surgery: one policy network, m(t) RL steps then one IL step, dynamic m(t).

Paper: Gao et al. 2025, "IN-RIL: Interleaved Reinforcement and Imitation Learning for Policy Fine-Tuning",
arXiv 2505.10442. There is no public code: a from-scratch implementation (fidelity table at the end of the file).

Equations / idea -> code
    Stage 1, BC of the mean: min E_{(s,a)~D_exp} ||mu(s) - a||^2 (L_IL's minimiser for a fixed std) -> squared_error()
    L_IL = E_{(s,a)~D_exp}[-log pi(a|s)], the std detached: imitation never shrinks the exploration noise -> il_loss()
    L_RL: PPO's clipped surrogate (Schulman et al. 2017), GAE advantages -> rl_loss(), clipped_surrogate(), gae()
        the critic's 0.5 (V(s) - R)^2                                  -> value_loss(), gradient_step()
    Interleaved update (Sec. 4.1), alpha_RL and alpha_IL in two Adam states (--il-mode none: m = infinity):
        m(t) RL steps theta <- theta - alpha_RL grad L_RL, then one IL step theta <- theta - alpha_IL grad L_IL;
        m counts gradient steps on PPO minibatches (10 epochs x 8: m 10 gives about 8 IL steps per rollout), where the
        paper's RL update may be a whole PPO iteration. main(): rl_step(); since_il += 1; if since_il >= m_t:
        measure_rho(); il_step()                                       -> rl_step(), il_step()
    Gradient surgery (Sec. 4.3, "separating possibly conflicting gradient updates in orthogonal subspaces") in every
        RL step, g_IL = grad L_IL on a fresh demo minibatch at the current theta: (1) PCGrad (Yu et al. 2020): if
        g_RL . g_IL < 0, g_RL <- g_RL - (g_RL . g_IL / ||g_IL||^2) g_IL; (2) Adam applies delta = theta' - theta;
        (3) its scaling and momentum can leave delta uphill on L_IL: if g_IL . delta > 0, delta is projected off g_IL
        the same way (not in the paper: off by default, --project-step adds it; then no RL step raises L_IL to first
        order on the demo minibatch it was measured on). charts/conflict_rate: the share of RL steps where (1)
        projected; charts/step_conflict_rate: where delta conflicted  -> rl_step(), project_conflicting()
    rho(t) = cos(grad L_IL, grad L_RL) (Assumption 1 / Theorem 1): > 0 aligned, < 0 conflict (some write-ups flip
        the sign); once per cycle, on the IL step's demo minibatch and the last RL minibatch -> measure_rho()
    Dynamic m(t) (--dynamic-m; ours: the paper ties the best ratio to rho, publishes no rule, ran fixed m), the same
        in both files: rho_bar <- 0.9 rho_bar + 0.1 rho(t) once per cycle, m(t) = clip(round(m * 3^(-rho_bar)),
        m_min, m_max): aligned gradients run IL up to 3x more often, conflicting ones up to 3x rarer -> dynamic_m()
Baselines: --il-mode none (RL-only fine-tuning), regularize (one loss L_RL + bc_coef * L_IL per RL step, no
interleaving, no surgery). The paper's regime: MetaWorld, --sparse-reward, a few demos (BC below 100% success).
    python inril_pcgrad.py --env-id Hopper-v4 --m 10
    python inril_pcgrad.py --env-id metaworld/pick-place-v3 --sparse-reward --num-demo-episodes 5 --bc-steps 3000
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
    cuda: bool = False  # use CUDA if available
    threads: int = 1  # torch CPU threads
    env_id: str = "Hopper-v4"  # gymnasium MuJoCo id, or metaworld/<task>-v3
    sparse_reward: bool = False  # MetaWorld only: reward 1 on the step of success (the episode ends there), else 0
    demo_path: str = ""  # .npz or minari:<id>; empty: data/<env-id>-medium.npz, or data/metaworld-<task>.npz
    num_demo_episodes: int = 0  # clone only the first N demo episodes (stage 1 and the IL steps); 0: all
    chunk_size: int = 1  # action chunk length: the policy outputs that many actions, run open loop (1 on locomotion)
    bc_steps: int = 20_000  # most BC gradient steps (stage 1 stops earlier when the loss plateaus)
    bc_batch_size: int = 256  # BC minibatch
    bc_lr: float = 1e-3  # BC learning rate
    total_timesteps: int = 300_000  # env steps of fine-tuning
    num_envs: int = 8  # parallel envs
    num_steps: int = 256  # steps per env per rollout
    actor_lr: float = 3e-4  # alpha_RL: learning rate of the RL steps (their own Adam state)
    il_lr: float = 3e-4  # alpha_IL: learning rate of the interleaved IL steps (their own Adam state)
    critic_lr: float = 1e-3  # value learning rate
    gamma: float = 0.99  # discount
    gae_lambda: float = 0.95  # GAE lambda
    update_epochs: int = 10  # PPO epochs per rollout
    num_minibatches: int = 8  # PPO minibatches per epoch (one RL gradient step each; 8 -> minibatches of 256)
    clip_coef: float = 0.2  # PPO clip
    max_grad_norm: float = 0.5  # gradient clipping
    target_kl: float = 0.1  # stop the epoch loop when the approximate KL exceeds this
    action_std: float = 0.5  # initial exploration std in action units
    critic_warmup_iters: int = 5  # rollouts at the start that train only the value net (policy frozen, no IL steps)
    il_mode: Literal["interleave", "none", "regularize"] = "interleave"  # IN-RIL, or a baseline (docstring)
    m: int = 10  # RL steps (gradient steps on PPO minibatches) per IL step: 10 -> ~8 IL steps per rollout
    dynamic_m: bool = False  # adapt m(t) from rho(t) (see the docstring)
    m_min: int = 2  # lower bound of m(t)
    m_max: int = 30  # upper bound of m(t)
    pcgrad: bool = True  # project conflicting RL gradients off the IL gradient (surgery (1))
    project_step: bool = False  # surgery (3): project the applied Adam step too (not in the paper; off as there)
    bc_coef: float = 0.1  # lambda of the regularisation baseline
    il_batch_size: int = 256  # demo minibatch of an IL step (and of the gradient measured for surgery / rho)
    compile: bool = False  # torch.compile the value and RL losses (fwd and bwd); pays only on long runs
    eval_every: int = 20_000  # env steps between evaluations
    eval_episodes: int = 5  # deterministic evaluation episodes

    def __post_init__(self):  # every check of the arguments, one sentence each
        if self.il_mode != "interleave" and self.dynamic_m:
            raise SystemExit("--dynamic-m needs --il-mode interleave.")
        if self.m < 1 or not 1 <= self.m_min <= self.m_max:
            raise SystemExit("--m, --m-min, --m-max need m >= 1 and 1 <= m_min <= m_max (RL alone: --il-mode none).")
        if self.sparse_reward and not self.env_id.startswith("metaworld/"):
            raise SystemExit("--sparse-reward needs a MetaWorld env (metaworld/<task>-v3), whose steps flag success.")
        if self.project_step and not (self.pcgrad and self.il_mode == "interleave"):
            raise SystemExit("--project-step acts on the surgery only: use it with --il-mode interleave --pcgrad.")


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

    def forward(self, obs):
        return self.mu(((obs - self.obs_mean) / self.obs_std).clamp(-10, 10))

    def dist(self, obs):
        return torch.distributions.Normal(self(obs), self.log_std.exp(), validate_args=False)


class Critic(nn.Module):
    """V(s), 2 x 256 ReLU; obs normalised inside."""

    def __init__(self, obs_dim, obs_mean, obs_std):
        super().__init__()
        self.register_buffer("obs_mean", torch.as_tensor(obs_mean))
        self.register_buffer("obs_std", torch.as_tensor(obs_std))
        self.v = mlp(obs_dim, 1)

    def forward(self, obs):
        return self.v(((obs - self.obs_mean) / self.obs_std).clamp(-10, 10)).squeeze(-1)


def squared_error(pred: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """||pred - a||^2 summed over action dims, mean over the batch: stage 1's BC loss and the logged demo MSE."""
    return ((pred - act) ** 2).sum(-1).mean()


def il_loss(policy: Policy, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """L_IL = E[-log pi(a|s)] with the std detached (a sigma-weighted MSE on the mean); scalar."""
    mean, std = policy(obs), policy.log_std.exp().detach()
    return -torch.distributions.Normal(mean, std).log_prob(act).sum(-1).mean()


def clipped_surrogate(new_logp, old_logp, adv, clip_coef):
    """PPO's clipped surrogate, to be minimised; advantages normalised per minibatch. Returns (loss, approx_kl)."""
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    log_ratio = new_logp - old_logp
    ratio = log_ratio.exp()
    loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip_coef, 1 + clip_coef)).mean()
    approx_kl = ((ratio - 1) - log_ratio).mean()
    return loss, approx_kl


def rl_loss(policy, mb, clip_coef):
    """L_RL at the current policy on a rollout minibatch (obs, act, adv; logp: the rollout's, as old): (L_RL, kl)."""
    return clipped_surrogate(policy.dist(mb["obs"]).log_prob(mb["act"]).sum(-1), mb["logp"], mb["adv"], clip_coef)


def value_loss(critic, mb):
    """0.5 E[(V(s) - R)^2] on a rollout minibatch (obs, ret)."""
    return 0.5 * ((critic(mb["obs"]) - mb["ret"]) ** 2).mean()


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


def measure_rho(l_il: torch.Tensor, l_rl: torch.Tensor, params) -> float:
    """rho(t) = cos(grad L_IL, grad L_RL) on `params`; > 0 aligned, < 0 conflict (both losses are minimised)."""
    g_il, g_rl = flat_grad(l_il, params), flat_grad(l_rl, params)
    return float(torch.dot(g_il, g_rl) / (g_il.norm() * g_rl.norm() + 1e-12))


def project_conflicting(g: torch.Tensor, g_ref: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """PCGrad: if g . g_ref < 0, remove g's component along g_ref (onto g_ref's normal plane); else g as is."""
    dot = torch.dot(g, g_ref)
    if dot >= 0:
        return g, False
    return g - dot / (g_ref.norm() ** 2 + 1e-12) * g_ref, True


def dynamic_m(m: int, rho_bar: float, m_min: int, m_max: int) -> int:
    """m(t) = clip(round(m * 3^(-rho_bar)), m_min, m_max): conflict (rho < 0) -> more RL steps per IL step."""
    return int(np.clip(round(m * 3.0 ** (-rho_bar)), m_min, m_max))


def gradient_step(loss, params, opt, max_grad_norm=None):
    """One gradient step of `opt` on `loss`, its gradient norm clipped to max_grad_norm (None: not clipped)."""
    opt.zero_grad()
    loss.backward()
    if max_grad_norm is not None:
        nn.utils.clip_grad_norm_(params, max_grad_norm)
    opt.step()


il_step = gradient_step  # theta <- theta - alpha_IL grad L_IL, by the IL optimizer (own Adam state: no RL momentum)


def rl_step(l_rl, l_il, params, rl_opt, max_grad_norm, project_step=False) -> tuple[bool, bool]:
    """theta <- theta - alpha_RL grad L_RL by the RL optimizer; with l_il, surgery steps (1)-(3) (module docstring; (3)
    only with project_step). Returns (the gradients conflicted, the applied step conflicted); (False, False) without
    l_il."""
    if l_il is None:
        gradient_step(l_rl, params, rl_opt, max_grad_norm)
        return False, False
    g_il, sizes = flat_grad(l_il, params), [p.numel() for p in params]
    g_rl, grad_hit = project_conflicting(flat_grad(l_rl, params), g_il)  # (1)
    for p, g in zip(params, g_rl.split(sizes)):
        p.grad = g.view_as(p).clone()
    nn.utils.clip_grad_norm_(params, max_grad_norm)
    before = torch.cat([p.detach().reshape(-1) for p in params])
    rl_opt.step()  # (2)
    descent = before - torch.cat([p.detach().reshape(-1) for p in params])  # -delta
    descent, step_hit = project_conflicting(descent, g_il)  # (3): -delta . g_IL >= 0 afterwards
    if step_hit and project_step:
        with torch.no_grad():
            for p, x in zip(params, (before - descent).split(sizes)):
                p.copy_(x.view_as(p))
    return grad_hit, step_hit


class TrainEnv(gym.Wrapper):
    """Runs chunk_size actions per step (open loop, rewards summed); sparse: the reward is info["success"], 0 or 1."""

    def __init__(self, env, chunk_size: int, sparse: bool):
        super().__init__(env)
        self.chunk_size, self.sparse, low, high = chunk_size, sparse, env.action_space.low, env.action_space.high
        self.action_space = gym.spaces.Box(np.tile(low, chunk_size), np.tile(high, chunk_size), dtype=np.float32)

    def step(self, action):
        total = 0.0
        for a in np.split(np.asarray(action), self.chunk_size):
            obs, r, term, trunc, info = self.env.step(a)
            total += float(info["success"]) if self.sparse else float(r)
            if term or trunc:
                break
        return obs, total, term, trunc, info


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


def first_episodes(demos: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The first n episodes of `demos` (n = 0: all of them); one sentence if the file holds fewer."""
    ends = np.flatnonzero(np.logical_or(demos["terminations"], demos["truncations"]))
    if not 0 <= n <= len(ends):
        raise SystemExit(f"--num-demo-episodes {n} asks for more episodes than the demo file holds ({len(ends)}).")
    return {key: v[: ends[n - 1] + 1] for key, v in demos.items()} if n else demos


def chunk_targets(demos, chunk_size):
    """(N, chunk_size * act_dim): the demo actions from each step on, the episode's last one repeated past its end."""
    ends, n = np.logical_or(demos["terminations"], demos["truncations"]), len(demos["actions"])
    ep_end = np.minimum.accumulate(np.where(ends, np.arange(n), n - 1)[::-1])[::-1]  # each step's episode end
    idx = np.minimum(np.arange(n)[:, None] + np.arange(chunk_size)[None], ep_end[:, None])
    return demos["actions"][idx].reshape(n, -1)


def log_episodes(log, step: int, final_info: dict, ended: np.ndarray):
    """charts/episodic_return (the env's own: dense on MetaWorld) and, with a success flag, charts/episodic_success."""
    for i in np.where(ended)[0]:
        log.log(step, **{"charts/episodic_return": float(final_info["episode"]["r"][i])})
        if "success" in final_info:
            log.log(step, **{"charts/episodic_success": float(final_info["success"][i])})


def main():
    args = tyro.cli(Args)
    run_name = f"{args.env_id.replace('/', '_')}__{args.exp_name}__{args.il_mode}__{args.seed}__{int(time.time())}"
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    tensor = lambda x: torch.as_tensor(x, dtype=torch.float32, device=device)
    chunk = args.chunk_size
    interleave, regularize = args.il_mode == "interleave", args.il_mode == "regularize"
    surgery = interleave and args.pcgrad  # rl_step() projects off the IL gradient
    # ---- env and demos (default: data/<env-id>-medium.npz, or data/metaworld-<task>.npz with 50 scripted demos) ----
    train_env = lambda i: TrainEnv(make_env(args.env_id, args.seed + i)(), chunk, args.sparse_reward)
    envs = gym.vector.SyncVectorEnv([lambda i=i: train_env(i) for i in range(args.num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    name = args.env_id.replace("/", "-") + ("" if args.env_id.startswith("metaworld/") else "-medium")
    demo_path = args.demo_path or os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", f"{name}.npz")
    demos = first_episodes(load_demos(demo_path, make_env(args.env_id, args.seed)()), args.num_demo_episodes)
    obs_dim, act_dim = demos["observations"].shape[1], demos["actions"].shape[1] * chunk
    obs_mean, obs_std = demos["observations"].mean(0), demos["observations"].std(0) + 1e-3
    D_obs, D_act = (torch.as_tensor(x, device=device) for x in (demos["observations"], chunk_targets(demos, chunk)))
    log = Logger(run_name, args)

    def demo_batch(n):
        idx = torch.randint(len(D_obs), (n,), device=device)
        return D_obs[idx], D_act[idx]

    policy = Policy(obs_dim, act_dim, obs_mean, obs_std, args.action_std).to(device)
    critic = Critic(obs_dim, obs_mean, obs_std).to(device)
    actor_params, critic_params = list(policy.parameters()), list(critic.parameters())

    def eval_policy(step):  # deterministic, the chunk's first action (closed loop); logged at step, returned as text
        with torch.no_grad():
            ret, success = evaluate(lambda o: policy(tensor(o)).cpu().numpy()[: act_dim // chunk], args.env_id,
                                    args.eval_episodes, 10_000 + args.seed)
        log.log(step, **{"eval/return": ret, "eval/success": success})  # an env without a success flag: nan, not shown
        return f"eval/return {ret:.1f}" + ("" if np.isnan(success) else f", eval/success {success:.2f}")

    # ---- Stage 1: behaviour cloning of the mean until the loss plateaus ----
    bc_opt = torch.optim.Adam(policy.mu.parameters(), lr=args.bc_lr)
    best, since, window = float("inf"), 0, []
    for step in log.steps(bar := tqdm(range(args.bc_steps), desc="stage 1: BC", leave=False)):  # stops on SIGINT
        obs_d, act_d = demo_batch(args.bc_batch_size)
        loss = squared_error(policy(obs_d), act_d)
        gradient_step(loss, None, bc_opt)  # no gradient clipping in stage 1
        window.append(loss.item())
        if (step + 1) % 500 == 0:
            mean_loss, window = float(np.mean(window)), []
            log.log(step + 1, **{"losses/bc_pretrain_mse": mean_loss})
            bar.set_postfix(mse=f"{mean_loss:.4f}")
            since, best = (0 if mean_loss < 0.97 * best else since + 1), min(best, mean_loss)
            if since >= 4:  # no 3% improvement over 2,000 steps: plateau
                break
    bc_eval = eval_policy(0)
    n_eps = int(np.logical_or(demos["terminations"], demos["truncations"]).sum())
    print(f"stage 1: BC on {demo_path} ({n_eps} demo episodes, {len(D_obs)} transitions) -> {bc_eval}")
    # ---- Stage 2: PPO fine-tuning; one IL step after every m(t) RL steps ----
    rl_opt = torch.optim.Adam(actor_params, lr=args.actor_lr, eps=1e-5)  # alpha_RL, its own Adam state
    il_opt = torch.optim.Adam(actor_params, lr=args.il_lr, eps=1e-5)  # alpha_IL, its own Adam state
    critic_opt = torch.optim.Adam(critic_params, lr=args.critic_lr, eps=1e-5)
    N, T = args.num_envs, args.num_steps
    batch, mb_size = N * T, N * T // args.num_minibatches
    buf = {key: torch.zeros((T, N) + s, device=device) for key, s in (("obs", (obs_dim,)), ("act", (act_dim,)),
           ("logp", ()), ("rew", ()), ("val", ()), ("done", ()), ("next_val", ()))}
    scale_reward = RewardScaler(N, args.gamma)
    obs, _ = envs.reset(seed=args.seed)
    value_loss_fn, rl_loss_fn = (torch.compile(f) if args.compile else f for f in (value_loss, rl_loss))  # same fns
    global_step, rl_steps, next_eval = 0, 0, args.eval_every
    since_il = 0  # RL steps since the last IL step
    m_t = args.m  # m(t): RL steps per IL step in the current cycle
    rho_bar = 0.0  # EMA of rho(t), one update per cycle
    num_iters = max(1, args.total_timesteps // (batch * chunk))
    pbar = tqdm(total=num_iters * batch * chunk, desc=f"stage 2: {args.il_mode}")
    for it in log.steps(range(num_iters)):  # stops early on SIGINT/SIGTERM (Logger)
        for t in range(T):  # ---- rollout ----
            o = tensor(obs)
            with torch.no_grad():
                d = policy.dist(o)
                a = d.sample()
                buf["logp"][t], buf["val"][t] = d.log_prob(a).sum(-1), critic(o)
            obs, r, term, trunc, info = envs.step(a.cpu().numpy())
            global_step += N * chunk
            pbar.update(N * chunk)
            ended = np.logical_or(term, trunc)
            buf["next_val"][t] = 0.0  # V(s_t+1) where an episode ended at t; elsewhere it is val[t + 1] (below)
            if ended.any():
                log_episodes(log, global_step, info["final_info"], ended)
                with torch.no_grad():  # bootstrap through truncations, not through terminations
                    final, not_term = tensor(np.stack(info["final_obs"][ended])), tensor(1.0 - term[ended])
                    buf["next_val"][t, torch.as_tensor(ended, device=device)] = critic(final) * not_term
            buf["obs"][t], buf["act"][t], buf["done"][t] = o, a, tensor(ended)
            buf["rew"][t] = tensor(scale_reward(r, ended))
            if global_step >= next_eval:
                next_eval += args.eval_every
                pbar.set_postfix_str(f"{eval_policy(global_step)}, m={m_t}")
        # ---- update: PPO minibatches (RL steps), one IL step after every m(t) of them ----
        with torch.no_grad():  # V(s_t+1) of a running episode is the value of the next rollout step: no extra forward
            o_last = tensor(obs)
            v_last = critic(o_last)
            next_val = torch.cat([buf["val"][1:], v_last[None]]) * (1 - buf["done"]) + buf["next_val"]
        adv, ret = gae(buf["rew"], buf["val"], next_val, buf["done"], args.gamma, args.gae_lambda)
        b = {key: v.reshape((batch,) + v.shape[2:]) for key, v in {**buf, "adv": adv, "ret": ret}.items()}
        diag = {key: [] for key in ("kl", "surrogate", "hit", "rho", "l_il", "il_mse")}  # KLs, diagnostics
        for _epoch in range(args.update_epochs):
            for idx in torch.randperm(batch, device=device).split(mb_size):
                mb = {key: v[idx] for key, v in b.items()}  # the minibatch
                v_loss = value_loss_fn(critic, mb)
                gradient_step(v_loss, critic_params, critic_opt, args.max_grad_norm)
                if it < args.critic_warmup_iters:  # value-only rollouts: no RL and no IL steps
                    continue
                l_rl, kl = rl_loss_fn(policy, mb, args.clip_coef)
                diag["kl"].append(kl.detach())  # no host sync per minibatch: read once per epoch and at logging
                diag["surrogate"].append(l_rl.detach())
                l_il = il_loss(policy, *demo_batch(args.il_batch_size)) if surgery or regularize else None
                if regularize:  # baseline: one loss L_RL + bc_coef * L_IL per RL step, no interleaving, no surgery
                    l_rl = l_rl + args.bc_coef * l_il
                hit = rl_step(l_rl, l_il if surgery else None, actor_params, rl_opt, args.max_grad_norm,
                              args.project_step)
                if surgery:
                    diag["hit"].append(hit)  # (the gradients conflicted, the applied step still conflicted)
                rl_steps += 1
                since_il += 1
                if interleave and since_il >= m_t:  # the cycle's IL step
                    obs_d, act_d = demo_batch(args.il_batch_size)
                    l_il = il_loss(policy, obs_d, act_d)
                    l_rl = rl_loss_fn(policy, mb, args.clip_coef)[0]  # L_RL at the current theta
                    rho = measure_rho(l_il, l_rl, actor_params)
                    rho_bar = 0.9 * rho_bar + 0.1 * rho
                    il_step(l_il, actor_params, il_opt, args.max_grad_norm)
                    since_il = 0
                    if args.dynamic_m:
                        m_t = dynamic_m(args.m, rho_bar, args.m_min, args.m_max)
                    diag["rho"].append(rho)
                    diag["l_il"].append(l_il.item())
                    diag["il_mse"].append(squared_error(policy(obs_d), act_d).item())  # after the step
            if diag["kl"] and torch.stack(diag["kl"][-args.num_minibatches:]).mean().item() > args.target_kl:
                break
        with torch.no_grad():
            obs_d, act_d = demo_batch(1024)
            demo_mse = squared_error(policy(obs_d), act_d).item()
            scalars = {"losses/value": v_loss.item(), "losses/demo_mse": demo_mse,
                       "charts/action_std": policy.log_std.exp().mean().item(), "charts/rl_steps": rl_steps}
        log.log(global_step, **scalars, **update_scalars(diag, m_t if interleave else None, rho_bar))
    pbar.close()
    print(f"BC start: {bc_eval} -> final: {eval_policy(global_step)} after {global_step} env steps")
    envs.close()
    return log.finish({"policy": policy.state_dict(), "critic": critic.state_dict()})


def update_scalars(diag: dict, m_t: int | None, rho_bar: float) -> dict[str, float]:
    """Diagnostics only: an update's means over its RL steps (surrogate, KL, conflicts), IL steps (L_IL, MSE, rho)."""
    scalars = {"losses/policy": torch.stack(diag["surrogate"]).mean().item(),
               "losses/approx_kl": torch.stack(diag["kl"]).mean().item()} if diag["surrogate"] else {}
    scalars.update({"charts/m": m_t} if m_t is not None else {})
    if diag["rho"]:  # one entry per IL step
        scalars.update({"losses/il": float(np.mean(diag["l_il"])), "losses/il_mse": float(np.mean(diag["il_mse"])),
                        "charts/rho": float(np.mean(diag["rho"])), "charts/rho_bar": rho_bar})
    if diag["hit"]:  # (1) and (3) of the surgery
        conflict_rate, step_conflict_rate = np.mean(diag["hit"], 0)
        scalars.update({"charts/conflict_rate": conflict_rate, "charts/step_conflict_rate": step_conflict_rate})
    return scalars


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


# Fidelity to the paper (arXiv 2505.10442; there is no official code; ResiP, ankile/robust-rearrangement, read for the
# residual file's precedent)
# | design choice | official (source) | this file | why different |
# |---|---|---|---|
# | update rule | 1 IL step then m RL steps, step sizes alpha_IL, alpha_RL (Sec. 4.1) | m(t) RL steps then 1 IL step,
#   two Adam states (il_lr, actor_lr, both 3e-4) | same sequence after stage 1; no RL momentum in IL steps |
# | m | fixed; 5-15 robust, ablations 2..30 | 10; --dynamic-m adapts it (ours) | proposed from rho, no rule published |
# | rho | gradient-relationship coefficient (Assumption 1), formula not public | cosine of the two loss gradients,
#   conflict negative, EMA 0.9 per cycle | not public |
# | surgery | "orthogonal subspaces" (Sec. 4.3), which gradient is projected not public | PCGrad of g_RL off g_IL
#   in every RL step | the paper's description; which side is projected is our reading |
# | projection of the applied Adam step | not in the paper | off; --project-step adds it (3) | Adam's scaling and
#   momentum can undo (1); on sparse pick-place at 1M (3 seeds) it changed nothing measurable, so the paper's default |
# | RL algorithm / policy | DPPO, IDQL, residual PPO; diffusion policies; Gym: chunks of 4, 40 envs x 500 steps, actor
#   lr 1e-4, critic lr 1e-3 (DPPO setup) | PPO, Gaussian MLP 2 x 256, chunk 1, 8 envs x 256 steps, actor lr 3e-4,
#   critic lr 1e-3 | CPU budget; one readable file |
# | L_IL | NLL of the demo actions | same, std detached | imitation must not shrink the exploration std |
# | critic warm-up | not stated; ResiP 5 value-only iterations (src/config/rl/residual_ppo.yaml @4ae40a1) | 5
#   rollouts (--critic-warmup-iters) | same in both files, so all variants compare like for like |
# | tasks, reward | Robomimic (300 demos), FurnitureBench (50 demos): sparse success; Gym locomotion: dense |
#   MetaWorld scripted demos with --sparse-reward and --num-demo-episodes; Hopper/Walker2d dense | what installs here |


if __name__ == "__main__":
    sys.exit(main())

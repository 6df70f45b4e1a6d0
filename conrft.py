"""ConRFT: reinforced fine-tuning of a consistency policy (Cal-QL offline stage, TD online stage, interventions).

Paper: Chen et al., "ConRFT: A Reinforced Fine-tuning Method for VLA Models via Consistency Policy", RSS 2025,
arXiv 2502.05450; official code cccedric/conrft (JAX, built on cccedric/cpql), read for the defaults, not copied.
A state MLP replaces the VLA backbone (the method is the same on its action head). After the shared helpers at the
end of the file: the SAC baseline, the file's plumbing (buffer, expert, checkpoints), then the fidelity table.

Equations -> code
    Consistency policy (Sec. IV-A): pi_psi(a|s) = f_psi(a^k, k | s), a^k ~ N(0, k^2 I), on the Karras noise levels
        k_m = (k_max^{1/rho} + (m-1)/(M-1) (k_min^{1/rho} - k_max^{1/rho}))^rho; f = c_skip(k) a^k + c_out(k)
        F_psi(c_in(k) a^k, emb(k), s), c_skip = sd^2 / ((k - k_min)^2 + sd^2), c_out = (k - k_min) sd / sqrt(k^2 +
        sd^2), c_in = 1 / sqrt(k^2 + sd^2) (f is the identity at k_min), emb: sinusoidal features of 250 log k
                                                                      -> karras_sigmas(), ConsistencyPolicy, mlp()
    Consistency term: L_c = E[w(k_m) (f_psi(a + k_m z, k_m | s) - a)^2], w(k) = 1/k^2 + 1/sd^2 -> consistency_loss()
    TD loss: E[(Q_i - y)^2] (no 1/2, as critic_loss_fn), y = r + gamma mask min_i Qbar_i(s', a' ~ pi) -> td_loss()
    Stage I critic, Cal-QL (Eq. 3): L_Q = alpha (E_{s~D, a~pi}[max(Q(s,a), V^mu(s))] - E_{(s,a)~D}[Q(s,a)]) + TD;
        the first term as CQL's logsumexp over random, current-policy and next-policy actions, each Q lower-bounded
        by the Monte-Carlo return of the data (V^mu)                        -> calibrate(), calql_loss(), mc_returns()
    Policy loss (Eq. 4): L_pi = -eta E[Q(s, a~pi)] + beta L_c                                       -> policy_loss()
    Stage II (Sec. IV-B): the plain TD critic on half demo, half online batches; the task reward on demos and online
        data alike; optional interventions (a scripted or shipped expert takes over at random, to the end of each
        episode from step --takeover-after, or when the policy's action strays from its own, --intervene-gap) go to
        both buffers, HIL-SERL style             -> task_reward(), mixed_batch(), step_decision(), store_episode()
    Both stages, per learner step: cta_ratio - 1 critic-only updates, then a critic + actor update     -> main()
Baselines (--algo): bc-only: consistency BC alone (Stage I with eta = 0; no critic, no Stage II). sac: a tanh-Gaussian
    actor (same trunk) through the same Stage I (Cal-QL critic; L = -eta Q + beta BC: the mean by MSE of tanh(mean),
    30 of 30 on pick-place vs 9 for the full likelihood, benchmarks/conrft/bc_reference.py; the std head alone by the
    demos' likelihood), then HIL-SERL's SAC (no BC or CQL term, no entropy backup, temperature auto-tuned from 0.01;
    same buffers, rewards, interventions)                        -> SACBaseline, gaussian_policy_loss(), GaussianActor

Run:
    python conrft.py                                          # metaworld/pick-place-v3, 20 scripted demos
    python conrft.py --env-id metaworld/push-v3 --intervene-prob 0.05
    python conrft.py --algo sac                               # plain SAC fine-tuning baseline
    python conrft.py --env-id Hopper-v4 --offline-steps 20000 --online-steps 50000
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
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]  # the name of this experiment
    seed: int = 1  # seed of the experiment
    torch_deterministic: bool = True  # torch.backends.cudnn.deterministic
    threads: int = 1  # torch CPU threads
    env_id: str = "metaworld/pick-place-v3"  # metaworld/<task>-v3 (sparse success reward) or a gymnasium MuJoCo id
    demo_path: str = ""  # demos; empty: data/metaworld-<task>.npz, or data/<env-id>-medium.npz for locomotion
    num_demos: int = 20  # demo episodes used (the first successful ones on MetaWorld)
    offline_steps: int = 20_000  # Stage I gradient steps
    online_steps: int = 50_000  # Stage II env steps (one learner step each)
    stage_one: str = ""  # model.pt of a run of the same --algo: no Stage I, Stage II starts from its nets (official)
    resume: str = ""  # model.pt of a run stopped in Stage I (Ctrl-C, SIGTERM): its Stage I goes on, exactly
    algo: Literal["conrft", "bc-only", "sac"] = "conrft"  # the method, or a baseline (see the module docstring)
    init_temperature: float = 0.01  # --algo sac, Stage II: initial SAC temperature (HIL-SERL's; tuned to -|A|/2)
    num_scales: int = 40  # M, the number of Karras noise levels
    sigma_min: float = 0.002  # k_min
    sigma_max: float = 80.0  # k_max
    sigma_data: float = 0.5  # sd in the skip scalings
    rho: float = 7.0  # Karras schedule exponent
    num_sample_steps: int = 1  # consistency sampling steps
    eta_offline: float = 0.0  # Stage I: weight of -Q in the policy loss (official pre-training script: q_weight 0)
    beta_offline: float = 1.0  # Stage I: weight of the consistency loss (official: bc_weight 1)
    eta: float = 1.0  # Stage II: weight of -Q in the policy loss (official: q_weight 1.0)
    beta: float = 0.1  # Stage II: weight of the consistency loss, constant (official: bc_weight 0.1)
    beta_fade: bool = False  # NOT official: Stage II beta falls from beta_offline by beta_decay per update to beta_min
    beta_min: float = 0.05  # --beta-fade: beta fades to this
    beta_decay: float = 5e-5  # --beta-fade: beta decreases by this per update
    online_cql: bool = False  # NOT official (its Stage II critic has the plain TD loss): keep Cal-QL in Stage II
    cta_ratio: int = 2  # critic updates per actor update (cta_ratio - 1 critic-only, then one critic + actor update)
    cql_alpha: float = 0.1  # alpha of the Cal-QL regulariser
    cql_n_actions: int = 10  # sampled actions per kind (random, current, next) in the CQL term
    num_qs: int = 2  # critic ensemble size
    gamma: float = 0.98  # discount (TD target and Monte-Carlo returns)
    tau: float = 0.005  # Polyak rate
    batch_size: int = 256  # minibatch (half demo, half online in Stage II)
    lr: float = 3e-4  # learning rate (actor and critic)
    hidden: int = 256  # width of the 2 hidden layers
    state_embed: int = 0  # critic, policy: each its own Dense(N) -> LayerNorm -> tanh on the state (official: 64)
    success_reward: float = 10.0  # MetaWorld task reward at the success step (demos and online data)
    step_penalty: float = 0.05  # MetaWorld task reward on every other step: -step_penalty (pushes for fast success)
    episode_steps: int = 0  # training episodes end at step N as done, mask 0 (official: 100); 0: the env's (bootstraps)
    intervene_prob: float = 0.0  # Stage II: probability per learner step that the expert takes over (0: never)
    takeover_steps: int = 10  # steps the expert acts once it takes over
    takeover_after: int = 0  # NOT official: the expert also corrects each episode from this step to its end (0: off)
    intervene_gap: float = 0.0  # NOT official: the expert also steps in when the actions' L1 gap exceeds this (0: off)
    compile: bool = False  # torch.compile the critic and actor updates (tens of seconds on a CPU: long runs only)
    eval_every: int = 5000  # steps (Stage I: gradient steps; Stage II: env steps) between evaluations
    eval_episodes: int = 10  # evaluation episodes
    eval_noise: bool = True  # evaluate from a random z ~ N(0, I) as the official code (SAC: at its mean always)

    def __post_init__(self):
        if self.cta_ratio < 1:
            raise SystemExit(f"--cta-ratio {self.cta_ratio}: critic updates per actor update must be 1 or more.")
        if min(self.episode_steps, self.state_embed) < 0:
            raise SystemExit(f"--episode-steps {self.episode_steps}, --state-embed {self.state_embed}: neither may be "
                             "negative (0 keeps the default).")


# ---- networks ----
def karras_sigmas(num_scales, sigma_min, sigma_max, rho):
    """The M noise levels from sigma_max down to sigma_min (Karras et al. 2022)."""
    ramp = torch.linspace(0, 1, num_scales)
    return (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def mlp(inp, hidden, layers=2):
    """The official policy trunk (mlp.py::MLP, use_layer_norm, tanh): (Dense -> LayerNorm -> tanh) x layers."""
    mods = [(nn.Linear(inp if i == 0 else hidden, hidden), nn.LayerNorm(hidden), nn.Tanh()) for i in range(layers)]
    return nn.Sequential(*(m for layer in mods for m in layer))


def state_encoder(obs_dim, embed):
    """The official state encoder (encoding.py, proprio): Dense(embed) -> LayerNorm -> tanh; embed 0: the identity."""
    return nn.Sequential(*([nn.Linear(obs_dim, embed), nn.LayerNorm(embed), nn.Tanh()] if embed else []))


class TimeEmbedding(nn.Module):
    """The official timeMLP: sinusoidal features of t (t_dim of them) -> Dense(2 t_dim) -> tanh -> Dense(t_dim)."""

    def __init__(self, t_dim=16):
        super().__init__()
        half = t_dim // 2
        self.register_buffer("freqs", torch.exp(-np.log(10000.0) / (half - 1) * torch.arange(half).float()))
        self.net = nn.Sequential(nn.Linear(t_dim, 2 * t_dim), nn.Tanh(), nn.Linear(2 * t_dim, t_dim))

    def forward(self, t):  # (B, 1) -> (B, t_dim)
        e = t * self.freqs
        return self.net(torch.cat([e.sin(), e.cos()], -1))


class ConsistencyPolicy(nn.Module):
    """f_psi(x, k | s) = c_skip(k) x + c_out(k) F_psi(c_in(k) x, emb(k), s), clipped to the action box [-1, 1]."""

    def __init__(self, obs_dim, act_dim, hidden, sigma_min, sigma_max, sigma_data, t_dim=16, embed=0):
        super().__init__()
        self.act_dim, self.sigma_min, self.sigma_max, self.sd = act_dim, sigma_min, sigma_max, sigma_data
        self.t_net, self.embed = TimeEmbedding(t_dim), state_encoder(obs_dim, embed)  # its own, as official
        self.net = nn.Sequential(mlp((embed or obs_dim) + act_dim + t_dim, hidden), nn.Linear(hidden, act_dim))

    def scalings(self, sigma):
        c_skip = self.sd**2 / ((sigma - self.sigma_min) ** 2 + self.sd**2)
        c_out = (sigma - self.sigma_min) * self.sd / (sigma**2 + self.sd**2).sqrt()
        return c_skip, c_out

    def forward(self, obs, x, sigma):
        """obs (B, o), noised action x (B, a), noise level sigma (B, 1) -> clean action (B, a)."""
        c_skip, c_out = self.scalings(sigma)
        c_in = 1 / (sigma**2 + self.sd**2).sqrt()
        h = self.net(torch.cat([self.embed(obs), c_in * x, self.t_net(1000 * 0.25 * torch.log(sigma + 1e-44))], -1))
        return (c_skip * x + c_out * h).clamp(-1, 1)

    def sample(self, obs, sigmas, steps=1, noise=True):
        """a = f(k_max z, k_max | s), then steps - 1 re-noise/denoise rounds (noise=False: z = 0)."""
        b = obs.shape[0]
        z = torch.randn(b, self.act_dim) if noise else torch.zeros(b, self.act_dim)
        a = self(obs, self.sigma_max * z, torch.full((b, 1), self.sigma_max))
        for m in torch.linspace(0, len(sigmas) - 1, steps + 1)[1:-1].long():  # indices of the levels k_m
            s = sigmas[m]
            x = a + (s**2 - self.sigma_min**2).sqrt() * (torch.randn_like(a) if noise else 0.0)
            a = self(obs, x, torch.full((b, 1), float(s)))
        return a


class EnsembleLinear(nn.Module):
    """E independent linear layers as one batched matmul: (E, B, inp) -> (E, B, out)."""

    def __init__(self, num_members, inp, out):
        super().__init__()
        bound = 1 / np.sqrt(inp)
        self.weight = nn.Parameter(torch.empty(num_members, inp, out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_members, 1, out).uniform_(-bound, bound))

    def forward(self, x):
        return torch.baddbmm(self.bias, x, self.weight)


class CriticEnsemble(nn.Module):
    """E critics Q_i(s, a) as official: [embed > 0: s -> Dense(embed) -> LayerNorm -> tanh, one for all E] Dense ->
    LayerNorm -> tanh (x2) -> Dense(1), batched; (B, o), (B, a) -> (E, B, 1); (B, o), (B, n, a) -> (E, B, n)."""

    def __init__(self, obs_dim, act_dim, num_qs, hidden=256, embed=0):
        super().__init__()
        self.num_qs, self.embed = num_qs, state_encoder(obs_dim, embed)  # one for all E critics
        self.l1 = EnsembleLinear(num_qs, (embed or obs_dim) + act_dim, hidden)
        self.l2, self.l3 = EnsembleLinear(num_qs, hidden, hidden), EnsembleLinear(num_qs, hidden, 1)

    def forward(self, obs, act):
        if act.dim() == 3:
            n = act.shape[1]
            flat_obs = obs.unsqueeze(1).expand(-1, n, -1).reshape(-1, obs.shape[-1])
            return self(flat_obs, act.reshape(-1, act.shape[-1])).reshape(self.num_qs, -1, n)
        x = torch.cat([self.embed(obs), act], -1).unsqueeze(0).expand(self.num_qs, -1, -1)
        x = torch.tanh(F.layer_norm(self.l1(x), (self.l1.weight.shape[-1],)))
        x = torch.tanh(F.layer_norm(self.l2(x), (self.l2.weight.shape[-1],)))
        return self.l3(x)


# ---- losses (pure functions; tests call them) ----
def consistency_loss(policy, obs, act, sigmas, sigma_data):
    """L_c = E_m,z[w(k_m) mean_dims (f(a + k_m z, k_m | s) - a)^2], k_m of the first M - 1 levels, Karras w(k)."""
    idx = torch.randint(0, len(sigmas) - 1, (obs.shape[0],))
    k = sigmas[idx].unsqueeze(-1)
    recon = policy(obs, act + k * torch.randn_like(act), k)
    w = 1 / k**2 + 1 / sigma_data**2
    return (((recon - act) ** 2).mean(-1, keepdim=True) * w).mean()


def calibrate(q: torch.Tensor, mc: torch.Tensor) -> torch.Tensor:
    """Cal-QL's calibration max(Q, V^mu): never below the behaviour value."""
    return torch.maximum(q, mc)


def td_loss(critic, target_critic, policy, b, gamma, sigmas=None, steps=1):
    """Plain TD loss E[(Q_i(s, a) - y)^2], y = r + gamma mask min_i Qbar_i(s', a'), a' ~ pi (no entropy backup): the
    official Stage II critic loss (critic_loss_fn), and SAC's."""
    with torch.no_grad():
        next_a = policy.sample(b["next_observations"], sigmas, steps)
        q_next = target_critic(b["next_observations"], next_a).min(0).values.squeeze(-1)
        y = b["rewards"] + gamma * b["masks"] * q_next
    return ((critic(b["observations"], b["actions"]).squeeze(-1) - y) ** 2).mean()


def calql_loss(critic, target_critic, policy, b, sigmas, args):
    """Stage I critic: td_loss() + alpha * Cal-QL regulariser; returns (loss, td, regulariser)."""
    td = td_loss(critic, target_critic, policy, b, args.gamma, sigmas, args.num_sample_steps)
    q_pred = critic(b["observations"], b["actions"]).squeeze(-1)  # (E, B)
    B, n, a_dim = b["rewards"].shape[0], args.cql_n_actions, b["actions"].shape[-1]
    with torch.no_grad():
        rand = torch.rand(B, n, a_dim) * 2 - 1
        rep = lambda o: o.unsqueeze(1).expand(-1, n, -1).reshape(B * n, -1)  # noqa: E731
        cur = policy.sample(rep(b["observations"]), sigmas, args.num_sample_steps).reshape(B, n, a_dim)
        nxt = policy.sample(rep(b["next_observations"]), sigmas, args.num_sample_steps).reshape(B, n, a_dim)
    q_ood = calibrate(critic(b["observations"], torch.cat([rand, cur, nxt], 1)), b["mc_returns"].view(1, B, 1))
    cat = torch.cat([q_ood, q_pred.unsqueeze(-1)], -1)
    cql_diff = torch.logsumexp(cat, -1) - np.log(cat.shape[-1]) - q_pred
    return td + args.cql_alpha * cql_diff.mean(), td, cql_diff.mean()


def policy_loss(policy, critic, obs, act, sigmas, args, beta, eta):
    """L_pi = -eta E[Q(s, a~pi)] + beta L_c (Eq. 4), Q the ensemble mean; returns (loss, L_c, E[Q])."""
    l_c = consistency_loss(policy, obs, act, sigmas, args.sigma_data)
    if eta == 0:
        return beta * l_c, l_c, torch.zeros(())
    q = critic(obs, policy.sample(obs, sigmas, args.num_sample_steps)).mean(0)
    return -eta * q.mean() + beta * l_c, l_c, q.mean()


# ---- data, interventions and the learner's helpers ----
def mc_returns(rewards, ends, gamma):
    """Discounted return-to-go within each episode (episodes end where `ends` is 1): V^mu of the data."""
    out, g = np.zeros_like(rewards), 0.0
    for i in reversed(range(len(rewards))):
        g = rewards[i] + gamma * g * (1.0 - ends[i])
        out[i] = g
    return out


def task_reward(success, env_reward, sparse, success_reward, step_penalty):
    """The official task reward on MetaWorld: success_reward at the success step, -step_penalty on every other
    step, for demos and online data alike (arrays or scalars); a gymnasium MuJoCo env keeps its own reward."""
    return np.where(np.asarray(success) > 0, success_reward, -step_penalty).astype(np.float32) if sparse else env_reward


def demo_rows(demos, sparse, args):
    """Demo transitions for the buffer: the task reward (task_reward(), the same as online), masks (0 at terminations,
    at every episode end with --episode-steps), Monte-Carlo returns (V^mu), actions clipped to (-1, 1)."""
    rewards = task_reward(demos["terminations"], demos["rewards"], sparse, args.success_reward, args.step_penalty)
    ends = np.logical_or(demos["terminations"], demos["truncations"]).astype(np.float32)
    masks = 1.0 - (ends if args.episode_steps else demos["terminations"])  # --episode-steps: the time limit is done
    return {"observations": demos["observations"], "actions": np.clip(demos["actions"], -1 + 1e-5, 1 - 1e-5),
            "rewards": rewards, "next_observations": demos["next_observations"], "masks": masks,
            "mc_returns": mc_returns(rewards, ends, args.gamma)}


def mixed_batch(demo_buf, online_buf, batch_size, rng):
    """Stage II's batch: half demo (and intervention) data, half online data."""
    half = batch_size // 2
    d, o = demo_buf.sample(half, rng), online_buf.sample(batch_size - half, rng)
    return {key: torch.cat([d[key], o[key]]) for key in d}


def step_decision(obs, t, act, expert, takeover_left, rng, args):
    """Who acts at step t of an episode; returns (action, by_expert, expert steps left). The expert (None: never)
    takes over at random, to the episode's end from step --takeover-after, or when act(obs) strays from its own."""
    if takeover_left == 0 and expert is not None:
        if rng.random() < args.intervene_prob:
            takeover_left = args.takeover_steps
        elif args.takeover_after and t >= args.takeover_after:
            takeover_left = sys.maxsize  # a correction: the expert acts until the episode ends
    action = None if takeover_left else act(obs)
    if action is not None and args.intervene_gap and np.abs(action - expert(obs)).sum() > args.intervene_gap:
        takeover_left = args.takeover_steps  # the policy is about to go wrong: the expert steps in now
    if takeover_left:
        return expert(obs), True, takeover_left - 1
    return action, False, takeover_left


def store_episode(episode, online_buf, demo_buf, gamma):
    """An ended episode, a list of (obs, action, reward, next_obs, mask, by_expert), into the online buffer with
    its Monte-Carlo returns; its expert steps (interventions) also into the demo buffer."""
    keys = ("observations", "actions", "rewards", "next_observations", "masks")
    rows = {key: np.array([e[i] for e in episode], np.float32) for i, key in enumerate(keys)}
    ends = (np.arange(len(episode)) == len(episode) - 1).astype(np.float32)  # the episode ends at its last step
    rows["mc_returns"] = mc_returns(rows["rewards"], ends, gamma)
    online_buf.add_many(rows)
    by_expert = np.array([e[5] for e in episode])
    if by_expert.any():
        demo_buf.add_many({key: v[by_expert] for key, v in rows.items()})


def gradient_step(opt, loss):
    opt.zero_grad()
    loss.backward()
    opt.step()


def main():
    args = tyro.cli(Args)
    run_name = f"{args.env_id.replace('/', '_')}__{args.exp_name}__{args.algo}__{args.seed}__{int(time.time())}"
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    sparse, task = args.env_id.startswith("metaworld/"), args.env_id.split("/", 1)[-1]

    env = make_env(args.env_id, args.seed, args.episode_steps or None)()  # 0: the env's own limit (500)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    data_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
    demo_name = f"metaworld-{task}.npz" if sparse else f"{args.env_id}-medium.npz"
    demo_path = args.demo_path or os.path.join(data_dir, demo_name)
    demos, n_ep = first_episodes(load_demos(demo_path, env), args.num_demos, only_success=sparse)
    demos = demo_rows(demos, sparse, args)  # the task reward as online: +10 at success, -0.05 on other steps
    print(f"demos: {demo_path}, {n_ep} episodes, {len(demos['rewards'])} transitions")
    demo_buf = Buffer(obs_dim, act_dim, len(demos["rewards"]) + args.online_steps)
    demo_buf.add_many(demos)
    online_buf = Buffer(obs_dim, act_dim, max(args.online_steps, 1))
    log = Logger(run_name, args)

    # ---- the baselines (docstring): one flag each, read only on the lines marked "baseline" ----
    bc_only = args.algo == "bc-only"  # consistency BC: one actor update per step with eta = 0, no critic, no Stage II
    sac = SACBaseline(obs_dim, act_dim, args) if args.algo == "sac" else None  # its actor and updates: after main()
    sigmas = karras_sigmas(args.num_scales, args.sigma_min, args.sigma_max, args.rho)
    policy = sac.actor if sac else ConsistencyPolicy(obs_dim, act_dim, args.hidden, args.sigma_min, args.sigma_max,
                                                     args.sigma_data, embed=args.state_embed)  # baseline: SAC's actor
    critic = CriticEnsemble(obs_dim, act_dim, args.num_qs, args.hidden, args.state_embed)
    target_critic = CriticEnsemble(obs_dim, act_dim, args.num_qs, args.hidden, args.state_embed)
    target_critic.load_state_dict(critic.state_dict())
    critic_params, target_params = list(critic.parameters()), list(target_critic.parameters())
    actor_opt = torch.optim.Adam(policy.parameters(), lr=args.lr)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=args.lr)

    def critic_update(b, cql):
        """One critic step: Cal-QL (Stage I, or --online-cql) or the plain TD loss (Stage II), then Polyak."""
        if cql:
            c_loss, td, reg = calql_loss(critic, target_critic, policy, b, sigmas, args)
        else:
            c_loss = td = td_loss(critic, target_critic, policy, b, args.gamma, sigmas, args.num_sample_steps)
        gradient_step(critic_opt, c_loss)
        with torch.no_grad():
            torch._foreach_lerp_(target_params, critic_params, args.tau)  # Polyak of every parameter, one op
        stats = {"losses/critic": c_loss.detach(), "losses/td": td.detach()}  # tensors: read only when logged
        return stats | ({"losses/cql_diff": reg.detach()} if cql else {})  # no Cal-QL term in plain TD

    def actor_update(b, eta, beta, online):
        """One actor step on L_pi of Eq. 4."""
        if sac:  # baseline: SAC's own actor step
            return sac.actor_update(critic, actor_opt, b, eta, beta, online)
        p_loss, l_c, q = policy_loss(policy, critic, b["observations"], b["actions"], sigmas, args, beta, eta)
        gradient_step(actor_opt, p_loss)
        return {"losses/policy": p_loss.detach(), "losses/bc": l_c.detach(), "charts/q_policy": q.detach()}

    if args.compile:  # the same two functions, compiled on first use (one graph per stage's flags)
        critic_update, actor_update = torch.compile(critic_update), torch.compile(actor_update)

    def update(sample, online, beta):
        """One learner step as the official one: cta_ratio - 1 critic-only updates, then a critic + actor update,
        each on a fresh batch from `sample()`; Stage I: Cal-QL, eta_offline; Stage II: plain TD (or Cal-QL), eta."""
        if bc_only:  # baseline: BC alone, no critic, no Q term
            return actor_update(sample(), 0.0, beta, online)
        for _ in range(args.cta_ratio):
            b = sample()
            stats = critic_update(b, cql=not online or args.online_cql)
        return stats | actor_update(b, args.eta if online else args.eta_offline, beta, online)

    def act(obs, noise=True):  # the policy's action for one observation
        with torch.no_grad():
            o = torch.as_tensor(obs, dtype=torch.float32)[None]
            return policy.sample(o, sigmas, args.num_sample_steps, noise=noise)[0].numpy()

    def evaluate_and_log(step, prefix):  # logs <prefix>return and <prefix>success; returns them as text
        noise = args.eval_noise and not sac  # baseline: SAC at its mean
        ret, succ = evaluate(lambda o: act(o, noise=noise), args.env_id, args.eval_episodes, 10_000 + args.seed,
                             args.episode_steps or None)  # --episode-steps: evaluation episodes too (official)
        log.log(step, **{prefix + "return": ret, prefix + "success": succ})
        return f"eval/return {ret:.1f}" + ("" if np.isnan(succ) else f", eval/success {succ:.2f}")

    # ---- Stage I: offline (Cal-QL critic + consistency policy on the demos), or its checkpoint (parameters only) ----
    nets, opts = {"policy": policy, "critic": critic, "target_critic": target_critic}, {"actor_opt": actor_opt,
                                                                                         "critic_opt": critic_opt}
    if args.stage_one:
        load_stage_one(args.stage_one, nets, args.algo)
    offline_steps = 0 if args.stage_one else args.offline_steps
    done = load_stage_one(args.resume, nets, args.algo, opts, rng) if args.resume else 0
    for step in log.steps(tqdm(range(done, offline_steps), "stage I (offline)", total=offline_steps, initial=done)):
        stats = update(lambda: demo_buf.sample(args.batch_size, rng), online=False, beta=args.beta_offline)
        done = step + 1  # stops on SIGINT/SIGTERM: --resume goes on from here with all of the state below
        if step % 1000 == 0:
            log.log(step, **{key.replace("losses/", "offline/"): v.item() for key, v in stats.items()})
        if (step + 1) % args.eval_every == 0 or step + 1 == offline_steps:
            evaluate_and_log(step + 1, "offline/eval_")
    stage_one = {"done": done} | ({k: o.state_dict() for k, o in opts.items()} | {"rng": rng.bit_generator.state,
                                  "torch_rng": torch.get_rng_state()} if done < offline_steps else {})  # for --resume
    print("after Stage I: " + evaluate_and_log(0, "eval/"))

    # ---- Stage II: online (half demo, half online batches, plain TD critic, optional interventions) ----
    interventions = args.intervene_prob > 0 or args.takeover_after > 0 or args.intervene_gap > 0
    expert = make_expert(args.env_id, data_dir) if interventions else None
    beta = args.beta_offline if args.beta_fade else args.beta  # Stage II BC weight (constant unless --beta-fade)
    # fresh Adam states: the official learner restores only the parameters of Stage I, not its optimizer states
    actor_opt = torch.optim.Adam(policy.parameters(), lr=args.lr)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=args.lr)
    episode = []  # this episode's (obs, action, reward, next_obs, mask, by_expert), stored when it ends
    takeover_left, expert_steps = 0, 0  # expert steps left in the takeover; expert steps since the rate was logged
    obs, _ = env.reset(seed=args.seed)
    online_steps = 0 if bc_only else args.online_steps  # baseline: BC has no Stage II
    pbar = tqdm(range(online_steps), desc="stage II (online)")
    for global_step in log.steps(pbar):
        action, by_expert, takeover_left = step_decision(obs, len(episode), act, expert, takeover_left, rng, args)
        next_obs, reward, term, trunc, info = env.step(action)
        r = float(task_reward(info.get("success", 0.0), reward, sparse, args.success_reward, args.step_penalty))
        done = term or (trunc and args.episode_steps > 0)  # truncations bootstrap, unless --episode-steps (official)
        episode.append((obs, action, r, next_obs, 1.0 - float(done), by_expert))
        expert_steps += by_expert
        obs = next_obs
        if term or trunc:
            store_episode(episode, online_buf, demo_buf, args.gamma)
            log.log(global_step, **{"charts/episodic_return": float(info["episode"]["r"]),
                                    "charts/success": float(info.get("success", np.nan))})
            episode, takeover_left = [], 0
            obs, _ = env.reset()
        if online_buf.size > 0:  # learning starts after the first episode
            stats = update(lambda: mixed_batch(demo_buf, online_buf, args.batch_size, rng), online=True, beta=beta)
            if args.beta_fade:
                beta = max(args.beta_min, beta - args.beta_decay)
            if global_step % 1000 == 0 or global_step + 1 == online_steps:
                log.log(global_step, **{key: v.item() for key, v in stats.items()}, **{"charts/beta": beta})
        if (global_step + 1) % 1000 == 0:
            log.log(global_step + 1, **{"charts/intervention_rate": expert_steps / 1000})
            expert_steps = 0
        if (global_step + 1) % args.eval_every == 0:
            pbar.set_postfix_str(evaluate_and_log(global_step + 1, "eval/"))
    return log.finish({"policy": policy.state_dict(), "critic": critic.state_dict(), "sigmas": sigmas,
                       "target_critic": target_critic.state_dict(), "stage_one": stage_one,
                       "log_alpha": sac.log_alpha.detach() if sac else None})  # baseline: SAC's temperature


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


# ==== the SAC baseline (--algo sac), not the method: a tanh-Gaussian actor, its BC loss in Stage I, HIL-SERL's SAC ====
class GaussianActor(nn.Module):
    """A tanh-Gaussian actor (same trunk, log-std in [-20, 2]) with ConsistencyPolicy's sample() interface."""

    def __init__(self, obs_dim, act_dim, hidden):
        super().__init__()
        self.net = mlp(obs_dim, hidden)
        self.mean, self.log_std = nn.Linear(hidden, act_dim), nn.Linear(hidden, act_dim)

    def dist(self, obs):
        h = self.net(obs)
        return torch.distributions.Normal(self.mean(h), self.log_std(h).clamp(-20, 2).exp())

    @staticmethod
    def tanh_log_prob(d, u):
        """log pi(tanh(u)) = log N(u) - log(1 - tanh(u)^2), summed over action dims (stable form)."""
        return (d.log_prob(u) - 2 * (np.log(2) - u - F.softplus(-2 * u))).sum(-1)

    def forward(self, obs):
        """A reparameterised action a = tanh(u) and its log-probability."""
        d = self.dist(obs)
        u = d.rsample()
        return torch.tanh(u), self.tanh_log_prob(d, u)

    def sample(self, obs, sigmas=None, steps=1, noise=True):
        return self(obs)[0] if noise else torch.tanh(self.dist(obs).mean)


def gaussian_policy_loss(actor, critic, obs, act, beta, eta):
    """Stage I: L = -eta E[Q(s, a~pi)] + beta (E||m - a||^2 - E[log N(a; sg(m), ((1 - sg(m)^2) std(sg(h)))^2)]), h the
    trunk's features, m = tanh(mean(h)), sg stop-gradient: the mean learns by MSE, the std head alone by the demos'
    likelihood in action space, tanh linearised at m (NOT official); returns (loss, BC term, E[Q])."""
    h = actor.net(obs)
    m = torch.tanh(actor.mean(h))
    l_bc = ((m - act) ** 2).mean(-1).mean()
    std = (1 - m.detach() ** 2).clamp_min(1e-6) * actor.log_std(h.detach()).clamp(-20, 2).exp()  # in action space
    l_bc_std = -torch.distributions.Normal(m.detach(), std).log_prob(act).sum(-1).mean()
    q = critic(obs, actor(obs)[0]).mean() if eta else torch.zeros(())  # mean over members and rows
    return -eta * q + beta * (l_bc + l_bc_std), l_bc, q


def sac_actor_losses(actor, critic, log_alpha, obs, target_entropy):
    """Stage II: actor loss alpha log pi(a~|s) - mean_i Q_i(s, a~); temperature loss alpha (-log pi - target)."""
    a_pi, logp = actor(obs)
    alpha = log_alpha.exp()
    a_loss = (alpha.detach() * logp - critic(obs, a_pi).mean(0).squeeze(-1)).mean()
    return a_loss, (alpha * (-logp.detach() - target_entropy)).mean()


class SACBaseline:
    """The SAC baseline's actor, its temperature (auto-tuned to entropy -|A|/2) and its actor step in both stages."""

    def __init__(self, obs_dim, act_dim, args):
        self.actor = GaussianActor(obs_dim, act_dim, args.hidden)
        self.log_alpha = torch.tensor(np.log(args.init_temperature), dtype=torch.float32, requires_grad=True)
        self.temp_opt, self.target_entropy = torch.optim.Adam([self.log_alpha], lr=args.lr), -act_dim / 2

    def actor_update(self, critic, actor_opt, b, eta, beta, online):
        if not online:
            p_loss, l_bc, q = gaussian_policy_loss(self.actor, critic, b["observations"], b["actions"], beta, eta)
            gradient_step(actor_opt, p_loss)
            return {"losses/policy": p_loss.detach(), "losses/bc": l_bc.detach(), "charts/q_policy": q.detach()}
        a_loss, t_loss = sac_actor_losses(self.actor, critic, self.log_alpha, b["observations"], self.target_entropy)
        gradient_step(actor_opt, a_loss)
        gradient_step(self.temp_opt, t_loss)
        return {"losses/policy": a_loss.detach(), "losses/temperature": t_loss.detach(),
                "charts/alpha": self.log_alpha.exp().detach()}


# ==== this file's plumbing: demo episodes, the buffer, the intervening expert, Stage I checkpoints ====
def first_episodes(demos, n, only_success):
    """The first n episodes (the first n successful ones when `only_success`) and how many were found."""
    ends = np.where(np.logical_or(demos["terminations"], demos["truncations"]))[0]
    keep = [np.arange(start, e + 1) for start, e in zip(np.r_[0, ends[:-1] + 1], ends)
            if not only_success or demos["terminations"][e] > 0][:n]
    if not keep:
        raise SystemExit("The demo file holds no " + ("successful " if only_success else "")
                         + "episode: pass --demo-path with demonstrations for this task.")
    return {key: v[np.concatenate(keep)] for key, v in demos.items()}, len(keep)


class Buffer:
    def __init__(self, obs_dim, act_dim, capacity):
        shapes = {"observations": (obs_dim,), "actions": (act_dim,), "rewards": (), "next_observations": (obs_dim,),
                  "masks": (), "mc_returns": ()}
        self.d = {key: np.zeros((capacity,) + s, np.float32) for key, s in shapes.items()}
        self.size, self.capacity = 0, capacity

    def add_many(self, rows):
        n = len(rows["rewards"])
        i = np.arange(self.size, self.size + n) % self.capacity
        for key in self.d:
            self.d[key][i] = rows[key]
        self.size = min(self.size + n, self.capacity)

    def sample(self, n, rng):
        idx = rng.integers(0, self.size, n)
        return {key: torch.as_tensor(v[idx]) for key, v in self.d.items()}


def make_expert(env_id, data_dir):
    """The intervening expert, obs -> action: MetaWorld's scripted policy for the task, or a shipped expert policy."""
    if not env_id.startswith("metaworld/"):
        return load_policy(os.path.join(data_dir, f"{env_id}-expert-policy.npz"))
    import metaworld.policies as P

    name = "Sawyer" + "".join(w.capitalize() for w in env_id.split("/", 1)[1][:-3].split("-")) + "V3Policy"
    scripted = getattr(P, name.replace("PegInsertSide", "PegInsertionSide"))()
    return lambda o: np.clip(scripted.get_action(o), -1, 1).astype(np.float32)


def load_stage_one(path, nets, algo, opts=None, rng=None):
    """--stage-one: the parameters of a Stage I checkpoint into `nets` ({"policy": ..., ...}); --resume: also its Adam
    states into `opts`, its RNG states into `rng` and torch. Returns its Stage I steps done, or ends in one sentence."""
    try:
        ckpt = torch.load(path, weights_only=False)
        for key, net in nets.items():
            net.load_state_dict(ckpt[key])
        for key, opt in (opts or {}).items():
            opt.load_state_dict(ckpt["stage_one"][key])
    except (OSError, KeyError, RuntimeError, EOFError, ValueError) as e:
        raise SystemExit(f"--{'resume' if opts else 'stage-one'} {path}: not a model.pt of conrft.py with --algo {algo}"
                         f" and these network sizes{', stopped in Stage I' if opts else ''} ({type(e).__name__}): "
                         "pass one that is.") from None
    if rng is not None:
        rng.bit_generator.state = ckpt["stage_one"]["rng"]
        torch.set_rng_state(ckpt["stage_one"]["torch_rng"])
    return ckpt.get("stage_one", {}).get("done", 0)


# Fidelity to the official code (cccedric/conrft). Sources: launcher = serl_launcher/serl_launcher/utils/launcher.py,
# agent = serl_launcher/serl_launcher/agents/continuous/conrft_single_octo_cp.py, train = examples/train_conrft_octo.py,
# task1 = examples/experiments/task1_pick_banana/; mlp.py, actor_critic_nets.py, encoding.py under serl_launcher/.../
# | design choice | official (source) | this file | why different |
# |---|---|---|---|
# | observation encoder | Octo VLA + ResNet on images (train, agent) | the state vector | no VLA here |
# | policy MLP; time input | [256, 256], Dense-LayerNorm-tanh, activate_final (launcher, mlp.py::MLP); sinusoidal
#   embedding (16) of 1000 * 0.25 * log(k) -> Dense 32 -> tanh -> Dense 16 (mlp.py::timeMLP) | same | - |
# | Karras levels, scalings | k_min 0.002, k_max 80, rho 7, M 40, sd 0.5, output clipped [-1, 1] (launcher) | same | - |
# | consistency loss | reconstruction error at a random level of [0, M-2], Karras weight, no target network (agent::
#   policy_loss_fn) | same | - |
# | Stage I / II weights | q_weight 0, bc_weight 1 (task1/run_learner_conrft_pretrain.sh) / q_weight 1.0, bc_weight
#   0.1, constant (task1/run_learner_conrft.sh) | eta 0, beta 1 / eta 1, beta 0.1 | - |
# | beta fading | bc_weight_rate 5e-5, bc_weight_min 0.05 stored (agent::create), read nowhere | off; --beta-fade | - |
# | Stage I critic | Cal-QL, alpha 0.1, 10 uniform / current / next actions, MC floor (agent::update_calql) | same | - |
# | Stage I -> II | parameters restored, "ignore the optimizer states", target kept (train) | fresh Adam, same | - |
# | a stopped Stage I | - | --resume: parameters, Adam states, both RNGs, steps done; equal to a run never stopped |
#   plumbing, not the method: the official 20k-step Stage I (about 3 h here) spans sessions on 2 cores |
# | Stage II critic | plain TD loss (agent::update_ql -> critic_loss_fn) | same; --online-cql keeps Cal-QL | an option |
# | critic | 2 x [256, 256] Dense-LayerNorm-tanh, min target, no entropy backup (launcher, agent); the state first
#   through Dense 64 -> LayerNorm -> tanh, one for both, the last Dense(1) shared too (encoding.py::EncodingWrapper,
#   actor_critic_nets.py::Critic); the actor has its own such embedding (OctoEncodingWrapper) | same, on the raw state
#   unless --state-embed 64 (critic, consistency policy; not SAC): one Dense(1) per member | hidden LayerNorms without
#   learned scale and shift; per-member output layer (minor); critic and actor updated in turn, not jointly (minor) |
# | critic updates per actor update | cta_ratio 2, both stages (examples/experiments/config.py, train) | 2 | - |
# | task reward | +10 at success, reward_neg -0.05 elsewhere, demos too (task1/config.py, record_demos_octo.py)
#   | same on MetaWorld (--success-reward, --step-penalty); MuJoCo keeps its own | no learned classifier |
# | episode end | 100 steps, training and evaluation (task1/config.py); the time limit is a termination, mask 0
#   (franka_env.py::step) | the env's (MetaWorld: 500), truncations bootstrap; --episode-steps 100: official, in
#   training, evaluation and the demos' ends; success terminates in both | the benchmark's evaluation protocol |
# | discount | 0.98 (task1/config.py); online MC returns with gamma 0.95 (train) | 0.98 throughout | one discount |
# | batch; offline steps | 256, Stage II half demo / half online (config.py, train); 20,000 (task1) | same | - |
# | updates per env step | async actor and learner, parameters pulled every 50 learner steps, learning from 100
#   transitions (train, config.py) | 1 learner step, latest parameters, learning after the first episode | one process |
# | evaluation actions | noise drawn, argmax ignored (agent::sample_actions) | same (--eval-noise); SAC: its mean | - |
# | interventions | a human with a SpaceMouse (train::actor) | scripted / shipped expert: at random, from step
#   --takeover-after to the episode's end, or past an action gap --intervene-gap | simulation |
# | SAC baseline | HIL-SERL: SAC from step 0, its std trained by the entropy term (sac.py) | Stage I: the mean by
#   MSE, the std head by the demos' likelihood (gaussian_policy_loss); then HIL-SERL's SAC | NOT official: at Stage I's
#   eta 0 an entropy term alone would push the std to its maximum |
# | weight init | xavier_uniform (common/common.py::default_init) | PyTorch defaults | minor |


if __name__ == "__main__":
    sys.exit(main())

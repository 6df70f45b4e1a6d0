"""RLIF: off-policy RL whose only reward is the expert's intervention, with HG-DAgger / DAgger baselines.

Paper: Luo, Dong, ... Levine, "RLIF: Interactive Imitation Learning as Reinforcement Learning", ICLR 2024, arXiv
2311.12996; official code pd-perry/RLIF (read, not copied). The learner is RLPD as in rlpd.py (its agent stands after
the shared helpers), so what RLIF adds comes first. How this file differs from the official one: the table at the end.

Setting (Sec. 4): an expert watches the learner and takes over; the env's reward is never learnt from (only logged as
charts/episodic_return and eval/return). Paper -> code:
    who acts, what is stored, with which label (Sec. 4.1): -1 on the learner's transition just before a takeover,
    else 0; of the expert's steps only a takeover's last is stored; masks from terminations only  -> step_decision()
    value-based intervention model (Sec. 5), with a reference critic Q_ref and action a_ref      -> should_intervene()
    random intervention model: a coin with --intervene-prob at every step                  -> random_intervention()
    an episode's last transition, which no step follows to label (--terminal)   -> last_transition(), terminal_label()
    Q_ref (the paper: a stronger agent's critic): Monte-Carlo regression on noisy rollouts of the shipped *expert*
    policy, which also gives a_ref, even when the medium one intervenes (the paper's "suboptimal expert") -> fit_qref()
    RLPD's SAC step (rlpd.py's, word for word)                         -> critic_update(), actor_temperature_update()
Three algorithms, one loop; the three flags set at the top of main() are their only difference:
    rlif       RL on the labels above (learns_by_rl); the intervention model decides who acts (expert_takes_over)
    hg-dagger  BC (official: NLL, AdamW weight decay 1e-3) on the demos and the expert's takeover steps  -> bc_loss()
    dagger     BC as hg-dagger; the learner always acts; the expert labels every visited state (labels_every_state)

Run:
    python rlif.py --env-id Hopper-v4 --expert-level medium
    python rlif.py --env-id Hopper-v4 --algo hg-dagger --expert-level medium
    python rlif.py --env-id Walker2d-v4 --intervention random --intervene-prob 0.5
    python rlif.py --env-id Hopper-v4 --utd 1 --num-qs 2 --hidden 128 --batch-size 128   # benchmarks/rlif setting
"""

import csv
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from typing import Callable, Literal, NamedTuple

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
    cuda: bool = False  # use CUDA if available (the reference critic stays on the CPU)
    threads: int = 1  # torch CPU threads
    env_id: str = "Hopper-v4"  # gymnasium MuJoCo id (needs data/<env-id>-{medium,expert}-policy.npz)
    demo_path: str = ""  # demos (.npz, minari:<id>), r relabelled 0; "": data/<env-id>-<expert-level>.npz; none: none
    total_timesteps: int = 100_000  # online env steps
    buffer_size: int = 1_000_000  # online replay capacity
    start_training: int = 0  # env steps before the first update (official 0: the demos are there)
    batch_size: int = 256  # minibatch of one critic step
    utd: int = 1  # critic updates per env step G (official flag default 1; Walker2d script 1, Hopper 15)
    num_qs: int = 10  # critic ensemble size E
    num_min_qs: int = 2  # size Z of the random subset of target critics the TD target takes the min over
    offline_ratio: float = 0.0  # 0 (official): demos in the one replay buffer; > 0: this fraction of every batch
    hidden: int = 256  # width of the hidden layers of actor and critics
    num_layers: int = 3  # hidden layers of actor and critics (official 3 x 256)
    critic_layer_norm: bool = True  # LayerNorm after every hidden critic layer
    actor_lr: float = 3e-4  # actor learning rate
    critic_lr: float = 3e-4  # critic learning rate
    temp_lr: float = 3e-4  # temperature learning rate
    gamma: float = 0.99  # discount
    tau: float = 0.005  # Polyak rate of the target critics (after every critic step)
    init_temperature: float = 1.0  # initial alpha
    backup_entropy: bool = False  # subtract alpha log pi(a'|s') in the TD target (RLIF: off)
    algo: Literal["rlif", "hg-dagger", "dagger"] = "rlif"  # rlif: RL on intervention labels; else a BC baseline
    expert_level: str = "medium"  # the intervening expert: data/<env-id>-<level>-policy.npz, expert or medium
    expert_noise: float = 0.0  # std of Gaussian noise on the intervening expert's actions
    intervention: Literal["value", "random"] = "value"  # intervention model
    intervene_alpha: float = 0.99  # alpha: the rule fires when Q_ref(s, a_learner) < alpha * Q_ref(s, a_ref)
    intervene_beta: float = 0.95  # beta: probability of intervening when the rule fires (1 - beta otherwise)
    intervene_prob: float = 0.5  # random model: probability that the expert acts, drawn anew at every step
    takeover_steps: int = 4  # value model: steps the expert acts once it takes over (then 1 learner step, unchecked)
    terminal: Literal["penalty", "drop", "zero"] = "penalty"  # fall -1/(1-gamma^(T+1)) NOT official; drop: official
    qref_episodes: int = 20  # noisy expert rollouts for the reference critic
    qref_steps: int = 3000  # regression steps for the reference critic
    bc_every: int = 1000  # DAgger family: env steps between BC phases
    bc_updates: int = 500  # DAgger family: BC steps per phase (x4 on the demos before the first step)
    bc_weight_decay: float = 1e-3  # DAgger family: BC's AdamW weight decay (official 1e-3; rlif: 0, i.e. Adam)
    compile: bool = False  # torch.compile both update steps (2-core CPU: ~1.2x per update after 10-30 s compiling)
    eval_every: int = 5000  # env steps between evaluations
    eval_episodes: int = 10  # deterministic evaluation episodes

    def __post_init__(self):  # every check of the flags; each failure is one sentence
        if not 1 <= self.num_min_qs <= self.num_qs:
            raise SystemExit(f"--num-min-qs ({self.num_min_qs}) must be between 1 and --num-qs ({self.num_qs}).")
        if not 0.0 <= self.offline_ratio < 1.0:
            raise SystemExit(f"--offline-ratio must be in [0, 1) (got {self.offline_ratio}).")
        if self.expert_level not in ("expert", "medium"):
            raise SystemExit(f"Unknown --expert-level {self.expert_level!r}: use expert or medium (shipped policies).")
        if self.takeover_steps < 1 or not 0.0 <= self.intervene_prob <= 1.0:
            raise SystemExit(f"--takeover-steps must be >= 1 and --intervene-prob in [0, 1] (got "
                             f"{self.takeover_steps}, {self.intervene_prob}).")


# ---- RLIF: who acts and what is stored, the intervention models, the reference critic (tests call them) ----
Transition = NamedTuple("Transition", [("obs", np.ndarray), ("act", np.ndarray), ("rew", float),
                                       ("next_obs", np.ndarray), ("mask", float)])  # one env step, as stored


def step_decision(pending: Transition | None, prev_expert: bool, takeover_left: int, fires: Callable[[], bool],
                  takeover_steps: int, hand_back: bool) -> tuple[bool, int, Transition | None]:
    """Who acts now, and the label of the previous step `pending` (None at an episode's first step), stored one step
    late as its label depends on who acts now (train_rlif_main.py). fires() asks the intervention model, only when the
    learner's action is checked; hand_back: the step a takeover ends, the learner acts unchecked (value model).
    Returns (the expert acts now, takeover_left after this step, `pending` labelled -1 if a takeover starts right
    after a learner step, 0 if the learner acts now, or None (not stored) if the expert acts again)."""
    if takeover_left > 0:  # a takeover goes on
        expert, takeover_left = True, takeover_left - 1
    elif prev_expert and hand_back:  # the takeover ended: the learner acts, unchecked
        expert = False
    else:
        expert = fires()
        takeover_left = takeover_steps - 1 if expert else 0
    label = 0.0 if not expert else (-1.0 if not prev_expert else None)
    store = None if pending is None or label is None else pending._replace(rew=label)
    return expert, takeover_left, store


def terminal_label(mask: float, gamma: float, terminal: str, takeover_steps: int) -> float:
    """Label of a transition that ends in a termination (mask 0) under --terminal penalty: the worst discounted return
    the labels can express. A -1 needs a learner step and a takeover of T = takeover_steps (random model: 1) is followed
    by a learner step, so -1 labels are >= T + 1 steps apart: sum_k gamma^(k (T + 1)) (-1) = -1/(1 - gamma^(T + 1))
    (-20.4 for T = 4, gamma 0.99; random model -50.3): never better than any continuation, nor harsher; else 0."""
    return -1.0 / (1.0 - gamma ** (takeover_steps + 1)) if terminal == "penalty" and mask == 0.0 else 0.0


def last_transition(pending: Transition, gamma, terminal, takeover_steps, takeover_left) -> Transition | None:
    """An episode's last transition: None under --terminal drop (the official code never stores it) or inside a takeover
    (the expert acts it, takeover_left > 0: officially never stored), else labelled terminal_label() (never -1)."""
    label = terminal_label(pending.mask, gamma, terminal, takeover_steps)
    return None if terminal == "drop" or takeover_left > 0 else pending._replace(rew=label)


def should_intervene(q_learner: float, q_ref: float, alpha: float, beta: float, u: float) -> bool:
    """Value-based model: the rule Q_ref(s, a_learner) < alpha * Q_ref(s, a_ref) fires -> intervene if u < beta;
    otherwise intervene if u < 1 - beta (u ~ U[0, 1))."""
    return u < (beta if q_learner < alpha * q_ref else 1.0 - beta)


def random_intervention(u: float, prob: float) -> bool:
    """Random model: the expert acts this one step with probability prob (u ~ U[0, 1)); no takeover, no hand-back."""
    return u < prob


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
    """Monte-Carlo regression of Q_ref on rollouts of `expert_act` with per-episode Gaussian action noise of std
    0 to 0.5 (so off-expert actions are covered). Returns (Q_ref, R^2 on its data, number of steps)."""
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
        ret = [0.0] * (len(rews) + 1)  # discounted returns to go
        for t in reversed(range(len(rews))):
            ret[t] = rews[t] + gamma * ret[t + 1]
        G.extend(ret[:-1])
    S, A, G = (torch.as_tensor(np.array(x), dtype=torch.float32) for x in (S, A, G))
    q = QRef(S.mean(0), S.std(0) + 1e-3, A.shape[1])
    opt, scale = torch.optim.Adam(q.parameters(), lr=1e-3), G.abs().mean() + 1e-6
    for _ in range(steps):
        idx = torch.randint(len(S), (256,))
        loss = ((q(S[idx], A[idx]) - G[idx]) / scale).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    r2 = 1 - ((q(S, A).detach() - G) ** 2).mean() / G.var()
    return q.eval(), float(r2), len(S)


def bc_loss(actor, obs, act, alpha=0.0):
    """DAgger family, the official BC (conservative_sac.py, bc=True): E[alpha log pi(a~|s) - log pi(act|s)], a~ ~ pi;
    alpha is its alpha_multiplier, 0 in the scripts (NLL only); labels clipped to +-0.999 (dagger_based_learner.py)."""
    h, a = actor.trunk(obs), ((act - actor.center) / actor.scale).clamp(-0.999, 0.999)  # a: tanh(u) of act
    u_dist = torch.distributions.Normal(actor.mean(h), actor.log_std(h).clamp(-20, 2).exp())  # as in Actor.forward()
    logp = (u_dist.log_prob(torch.atanh(a)) - torch.log(actor.scale * (1 - a.pow(2)) + 1e-6)).sum(-1)  # log pi(act|s)
    return (alpha * actor(obs)[1].mean() if alpha else 0.0) - logp.mean()


def main():
    args = tyro.cli(Args)  # Args.__post_init__ checks the flags
    # ---- the three algorithms differ only here (see the module docstring) ----
    learns_by_rl = args.algo == "rlif"  # critic + actor on the intervention labels; else BC on the expert's labels
    expert_takes_over = args.algo != "dagger"  # the intervention model runs; dagger: the learner always acts
    labels_every_state = args.algo == "dagger"  # the expert labels every visited state (hg-dagger: its own steps)
    # ---- the two intervention models ----
    hand_back = args.intervention == "value"  # the step a takeover ends, the learner acts unchecked
    takeover_steps = args.takeover_steps if args.intervention == "value" else 1  # random: one coin per step

    run_name = (f"{args.env_id.replace('/', '_')}__{args.exp_name}__{args.algo}-{args.expert_level}__{args.seed}__"
                f"{int(time.time())}")
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    rng = np.random.default_rng(args.seed)

    env = make_env(args.env_id, args.seed)()
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    data_prefix = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", args.env_id.replace("/", "-"))
    expert_path, ref_path = f"{data_prefix}-{args.expert_level}-policy.npz", f"{data_prefix}-expert-policy.npz"
    expert_act, ref_act = load_policy(expert_path), load_policy(ref_path)  # the intervener; a_ref, Q_ref's rollouts
    print(f"intervening expert: {expert_path}; reference policy (a_ref, Q_ref): {ref_path}")
    demos = None
    if args.demo_path != "none":
        demo_path = args.demo_path or f"{data_prefix}-{args.expert_level}.npz"
        demos = demo_arrays(load_demos(demo_path, env))
        fall = terminal_label(0.0, args.gamma, args.terminal, takeover_steps)  # the env's reward is never learnt from
        demos["rewards"] = np.where(demos["masks"] == 0.0, fall, 0.0).astype(np.float32)
        print(f"demos: {demo_path} ({len(demos['rewards'])} transitions, rewards relabelled 0, terminations {fall:g})")
    log = Logger(run_name, args)
    qref = None
    if args.intervention == "value" and expert_takes_over:
        qref, r2, n = fit_qref(ref_act, make_env(args.env_id, args.seed)(), args.qref_episodes, args.qref_steps,
                               args.gamma, args.seed)
        print(f"reference critic: Monte-Carlo fit on {n} noisy expert steps, R^2 {r2:.3f}")
        log.log(0, **{"charts/qref_r2": r2})

    low, high = env.action_space.low, env.action_space.high
    actor = Actor(obs_dim, act_dim, args.hidden, low, high, args.num_layers).to(device)
    critic, target_critic = (CriticEnsemble(obs_dim, act_dim, args.num_qs, args.hidden, args.critic_layer_norm,
                                            args.num_layers).to(device) for _ in range(2))
    target_critic.load_state_dict(critic.state_dict())
    log_alpha = torch.tensor(np.log(args.init_temperature), dtype=torch.float32, device=device, requires_grad=True)
    bc_wd = 0.0 if learns_by_rl else args.bc_weight_decay  # BC (baselines): AdamW with the official weight decay
    actor_opt = torch.optim.AdamW(actor.parameters(), lr=args.actor_lr, weight_decay=bc_wd)  # bc_wd 0: Adam itself
    critic_opt = torch.optim.Adam(critic.parameters(), lr=args.critic_lr)
    temp_opt = torch.optim.Adam([log_alpha], lr=args.temp_lr)
    target_entropy = -act_dim / 2
    n_demo = len(demos["rewards"]) if demos is not None else 0
    one_buffer = args.offline_ratio == 0.0  # official: the demos go into the replay buffer itself
    buffer = ReplayBuffer(obs_dim, act_dim, min(args.buffer_size, args.total_timesteps) + one_buffer * n_demo)
    demo_buffer = buffer if one_buffer else ReplayBuffer(obs_dim, act_dim, max(n_demo, 1))
    labels = ReplayBuffer(obs_dim, act_dim, n_demo + args.total_timesteps + 1)  # DAgger family: (s, a_expert)
    for i in range(n_demo):
        demo_buffer.add(*(demos[k][i] for k in ("observations", "actions", "rewards", "next_observations", "masks")))
        labels.add(demos["observations"][i], demos["actions"][i], 0.0, demos["next_observations"][i], 1.0)
    bc = lambda steps: bc_phase(actor, actor_opt, labels, steps, args.batch_size, rng, device)  # the DAgger family
    if not learns_by_rl and labels.size > 0:  # ---- baselines: BC pre-training on the demos ----
        log.log(0, **{"losses/bc": bc(4 * args.bc_updates)})

    critic_params, target_params = list(critic.parameters()), list(target_critic.parameters())
    critic_step = lambda b, alpha: critic_update(  # one critic step and Polyak on the minibatch b
        critic, target_critic, actor, critic_opt, critic_params, target_params, b, alpha, args)
    actor_step = lambda obs, alpha: actor_temperature_update(  # one actor and one temperature step
        actor, critic, actor_opt, log_alpha, temp_opt, obs, alpha, target_entropy)
    if args.compile:  # the same two functions, compiled on first use (CUDA: CUDA graphs remove the launch overhead)
        mode = "reduce-overhead" if device.type == "cuda" else None
        critic_step, actor_step = torch.compile(critic_step, mode=mode), torch.compile(actor_step, mode=mode)

    def policy(o, deterministic=True):
        with torch.no_grad():
            o = torch.as_tensor(o, dtype=torch.float32, device=device).unsqueeze(0)
            return actor(o, deterministic=deterministic)[0][0].cpu().numpy()

    def fires():
        """The intervention model at the current state `obs` and learner action `a_l` (read when called)."""
        if not expert_takes_over:
            return False
        if args.intervention == "random":
            return random_intervention(rng.random(), args.intervene_prob)
        with torch.no_grad():  # Q_ref(s, a_learner), Q_ref(s, a_ref) in one forward pass
            q_l, q_r = qref(torch.as_tensor(np.stack([obs, obs]), dtype=torch.float32),
                            torch.as_tensor(np.stack([a_l, ref_act(obs)]), dtype=torch.float32)).tolist()
        return should_intervene(q_l, q_r, args.intervene_alpha, args.intervene_beta, rng.random())

    obs, _ = env.reset(seed=args.seed)
    pending, prev_expert, takeover_left = None, False, 0  # the previous step, stored one step late (step_decision())
    n_takeovers, n_expert_steps, n_minus_one, window = 0, 0, 0, []
    pbar = tqdm(range(args.total_timesteps), desc=f"{args.algo} ({args.expert_level} expert, {args.intervention})")
    for global_step in log.steps(pbar):  # stops early on SIGINT/SIGTERM (Logger)
        # ---- act: the learner proposes, the expert may take over (step_decision), the previous step is stored ----
        a_l = policy(obs, deterministic=False)  # sampled, in the baselines too (official)
        a_e = np.clip(expert_act(obs) + args.expert_noise * rng.standard_normal(act_dim), -1, 1).astype(np.float32)
        expert_acts, takeover_left, store = step_decision(pending, prev_expert, takeover_left, fires, takeover_steps,
                                                          hand_back)
        if store is not None:
            buffer.add(*store)
            n_minus_one += store.rew == -1.0
        n_takeovers += expert_acts and not prev_expert
        action = a_e if expert_acts else a_l
        next_obs, reward, term, trunc, info = env.step(action)
        mask, done = 1.0 - float(term), term or trunc  # bootstrap through truncations
        if expert_acts or labels_every_state:  # ---- baselines: the expert's label of this state ----
            labels.add(obs, a_e, 0.0, next_obs, mask)
        pending, prev_expert = Transition(obs, action, 0.0, next_obs, mask), expert_acts
        n_expert_steps += expert_acts
        window.append(float(expert_acts))
        obs = next_obs
        if done:  # the episode's last transition, then a fresh start: no pending step, no takeover
            if store := last_transition(pending, args.gamma, args.terminal, takeover_steps, takeover_left):
                buffer.add(*store)  # not under --terminal drop, nor inside a takeover
            pending, prev_expert, takeover_left = None, False, 0
            log.log(global_step, **{"charts/episodic_return": float(info["episode"]["r"])})
            obs, _ = env.reset()
        if (global_step + 1) % min(1000, args.eval_every) == 0:
            log.log(global_step + 1, **{"charts/intervention_rate": float(np.mean(window)), "charts/takeovers":
                                        n_takeovers, "charts/expert_steps": n_expert_steps,
                                        "charts/minus_one_labels": n_minus_one})
            window = []

        # ---- learn ----
        if not learns_by_rl:  # ---- baselines: BC on the expert's labels ----
            if (global_step + 1) % args.bc_every == 0:
                log.log(global_step + 1, **{"losses/bc": bc(args.bc_updates), "charts/labels": labels.size})
        elif global_step >= args.start_training and buffer.size > 0:  # ---- RLIF: RLPD's updates on the labels ----
            offline = demo_buffer.arrays() if demo_buffer is not buffer and demo_buffer.size > 0 else None
            batch = sample_batch(buffer.arrays(), offline, args.batch_size, args.utd,
                                 args.offline_ratio if offline is not None else 0.0, rng)
            batch, alpha = {k: v.to(device) for k, v in batch.items()}, log_alpha.exp().detach()
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
            ret, succ = evaluate(policy, args.env_id, args.eval_episodes, 10_000 + args.seed)
            log.log(global_step + 1, **{"eval/return": ret, "eval/success": succ})
            pbar.set_postfix(eval_return=f"{ret:.0f}", takeovers=n_takeovers)

    print(f"takeovers {n_takeovers}, expert steps {n_expert_steps} of {args.total_timesteps}, -1 labels {n_minus_one}")
    return log.finish({"actor": actor.state_dict(), "critic": critic.state_dict(), "log_alpha": log_alpha.detach(),
                       "qref": qref.state_dict() if qref is not None else None})


def bc_phase(actor, actor_opt, labels, steps, batch_size, rng, device):
    """DAgger family: `steps` BC steps on minibatches of the expert's labels; returns the last loss."""
    d = {k: torch.as_tensor(v, device=device) for k, v in labels.arrays().items()}
    for _ in range(steps):
        idx = rng.integers(0, len(d["rewards"]), batch_size)
        loss = bc_loss(actor, d["observations"][idx], d["actions"][idx])
        actor_opt.zero_grad()
        loss.backward()
        actor_opt.step()
    return loss.item()


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


# ==== RLPD's agent as in rlpd.py: networks (plus --num-layers), losses, update steps (word for word, tested), data ====
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
        self.weight = nn.Parameter(torch.ones(num_members, 1, h))
        self.bias = nn.Parameter(torch.zeros(num_members, 1, h))

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:]) * self.weight + self.bias


class CriticEnsemble(nn.Module):
    """E critics Q_i(s, a), each (Dense -> LayerNorm -> ReLU) x num_layers -> Dense(1), in one batched module."""

    def __init__(self, obs_dim, act_dim, num_qs, hidden=256, layer_norm=True, num_layers=3):
        super().__init__()
        self.num_qs, dims = num_qs, [obs_dim + act_dim] + [hidden] * num_layers
        norm = (lambda: EnsembleLayerNorm(num_qs, hidden)) if layer_norm else nn.Identity
        layers = [m for i in range(num_layers) for m in (EnsembleLinear(num_qs, dims[i], hidden), norm(), nn.ReLU())]
        self.net = nn.Sequential(*layers, EnsembleLinear(num_qs, hidden, 1))

    def forward(self, obs, act):
        x = torch.cat([obs, act], -1)
        return self.net(x.unsqueeze(0).expand(self.num_qs, *x.shape))  # (E, B, 1)


class Actor(nn.Module):
    """Tanh-squashed Gaussian, state-dependent log std clipped to [-20, 2]; actions rescaled to the env's box."""

    def __init__(self, obs_dim, act_dim, hidden, low, high, num_layers=3):
        super().__init__()
        dims = [obs_dim] + [hidden] * num_layers
        self.trunk = nn.Sequential(*[m for i in range(num_layers) for m in (nn.Linear(dims[i], hidden), nn.ReLU())])
        self.mean, self.log_std = nn.Linear(hidden, act_dim), nn.Linear(hidden, act_dim)
        self.register_buffer("scale", torch.as_tensor((high - low) / 2, dtype=torch.float32))
        self.register_buffer("center", torch.as_tensor((high + low) / 2, dtype=torch.float32))

    def forward(self, obs, deterministic=False):
        """Returns (action, log pi(action|obs) of shape (B, 1))."""
        h = self.trunk(obs)
        mean, log_std = self.mean(h), self.log_std(h).clamp(-20, 2)
        u = mean if deterministic else mean + log_std.exp() * torch.randn_like(mean)
        a = torch.tanh(u)
        log_det = torch.log(self.scale * (1 - a.pow(2)) + 1e-6)  # log |d action / d u| of the squash and rescale
        logp = torch.distributions.Normal(mean, log_std.exp()).log_prob(u) - log_det
        return a * self.scale + self.center, logp.sum(-1, keepdim=True)


# ---- RLPD's losses (pure functions; tests call them) and update steps (rlpd.py's, word for word) ----
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


# ---- data: the replay buffer and its minibatches ----
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


# Fidelity to the official code (pd-perry/RLIF; train_rlif_main.py = examples/train_rlif_main.py, config =
# configs/rlpd_config.py, model.py = models/model.py):
# | design choice | official (source) | this file | why different |
# |---|---|---|---|
# | takeover, labels | 4 expert steps, then 1 learner step unchecked (train_rlif_main.py): the expert acts <= 4/5 of the
#   steps; -1 on the learner step before a takeover, else 0; of a takeover's steps only the last stored | same | - |
# | value rule | Q_ref(s,a_l) < alpha Q_ref(s,a_ref), a_ref from the reference agent; p 0.95 / 0.05 (same) | same | - |
# | alpha | 0.99 Walker2d, 0.97 Pen (scripts/run_*_value_based_rlif.sh) | 0.99 everywhere | no Hopper value script |
# | reference agent | Q_ref of a BC/SAC agent (Walker2d script: a BC expert, the min of its two Q's) or an RLPD agent
#   (Pen: its ensemble mean); a_ref sampled from its policy (train_rlif_main.py) | one Monte-Carlo-fitted Q_ref network,
#   a_ref the shipped expert's deterministic action | no trained agent with a critic is shipped |
# | intervening expert | BC policies of several levels, sampled | shipped PPO policies, deterministic (+ noise) | - |
# | random model | a coin each step, the expert acts that step, no takeover or hand-back; p 0.5 (Hopper) | same | - |
# | terminations | an episode's last transition is never stored (train_rlif_main.py, `if t != 0`): no fall is seen
#   online | --terminal penalty (default, NOT official): a fall is -1/(1 - gamma^(T+1)) = -20.4 (random model, T = 1:
#   -50.3), the worst discounted return of the labels, -1 at most once per T expert steps + 1 hand-back step
#   (terminal_label()); a last step inside a takeover is not stored (never officially); drop = official | zero (the
#   official labels' value) makes a fall worth 0, more than any continuation with -1 labels: a version of this file
#   learned to fall at once on Hopper; benchmarks/rlif/ (made when a fall was -100) compares penalty with drop |
# | demos | D4RL expert episodes (50 Hopper, 10 Walker2d) for every intervener, one buffer, r = 0 (scripts) | the
#   intervener's own 20 episodes (data/), one buffer, r = 0 (falls: the terminal label) | shipped data |
# | networks, batch | 3 x 256, E = 10, Z = 2, LayerNorm, no entropy backup; start_training 0, batch 256 | same | - |
# | UTD | flag default 1; Walker2d script 1, Hopper 15, Pen 5 | 1 | the flag default |
# | initialisation | RLIF's own MLP (model.py): xavier_uniform kernels, zero biases; the actor's mean and log-std heads
#   orthogonal(sqrt 2) (default_init, models/distributions.py) | PyTorch's default (uniform +-1/sqrt(fan_in), biases
#   too) | benchmarks/rlif/ ran with this one (rlpd.py has RLPD's official init) |
# | evaluation | 50-100 episodes, sampled actions (scripts) | 10 deterministic episodes | CPU budget |
# | BC of both baselines | -log pi(a_expert|s) + alpha log pi(a~|s) (alpha_multiplier 0 in the scripts: NLL only),
#   labels clipped to +-0.999, AdamW weight decay 1e-3, lr 3e-4, batch 256 (conservative_sac.py,
#   dagger_based_learner.py, run_pen_*dagger.sh); the learner samples its actions; a 2 x 256 TanhGaussianPolicy | the
#   same (bc_loss(), --bc-weight-decay), RLIF's 3 x 256 actor; NLL needs more steps than squared error (Hopper medium,
#   seed 1: 2,000 pre-train steps give a return of 412, squared error 1,004; 10,000: 1,001) | one actor for all |
# | HG-DAgger | L1 action gap > threshold, decaying epsilon 0.05, 4-step takeovers; BC on ALL visited steps incl. the
#   learner's own actions; 100k BC pre-train steps, 2,500 per 5 episodes (BinarySampler, dagger_based_learner.py,
#   run_pen_hgdagger.sh) | RLIF's value rule and takeovers; BC on demos + expert steps; 2,000 pre-train, 500 per 1,000
#   env steps | RLIF's intervention data: only the learning differs; a learner's action is no label; CPU budget |
# | DAgger | a random 50% of visited states (drawn with replacement) relabelled, the rest keep the learner's action
#   (DaggerUniformSampler) | every visited state labelled by the expert | a learner's own action is no label |

if __name__ == "__main__":
    sys.exit(main())

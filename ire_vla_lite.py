"""iRe-VLA lite: SFT and frozen-backbone RL in alternation, on MetaWorld, with a small "VLA" that trains on a CPU.

Paper: Guo et al., "Improving Vision-Language-Action Model with Online Reinforcement Learning", ICRA 2025,
arXiv 2501.16664 (Sec. IV, Alg. 1; no official code is public). "Lite": the 3B BLIP-2 VLM becomes a small
Transformer over the instruction's word tokens and state tokens; the pipeline is the paper's.

The paper's pipeline (Sec. IV, Alg. 1), and where each step is in the code:
    Model: backbone ("VLM") = word embedding of the task name + linear state tokens + a Transformer whose linear
        layers carry LoRA, W x + (alpha / r) B A x with B zero-initialised (LoRA adds nothing at first); a
        Gaussian action head and a critic head of the same shape with one output   -> VLA, LoRALinear
    Stage 0: SFT on the expert tasks' demos D_e, min E ||pi(o, l) - a||^2, of the base weights and heads (the
        lite backbone is not pre-trained: stage 0 is its pre-training; LoRA stays zero)  -> sft_loss(), sft_stage()
    Odd stages (RL): the backbone (base weights and LoRA) frozen, its features computed once per step; PPO trains
        only the action and critic heads on the RL tasks, sparse reward 1 on success  -> rl_stage(), ppo_loss()
        PPO's ratio uses the raw Gaussian sample's log-prob, the env gets it clipped to [-1, 1] -> sample_action()
        a time limit is bootstrapped with V(final observation), a success is not     -> gae()
        successful trajectories, with the clipped actions, go into D_RL              -> successful()
    Even stages (SFT): LoRA + heads on D_e united with D_RL, so nothing learned is forgotten  -> sft_stage()
    Splits: expert tasks (demos), RL tasks (new, no demos), held-out tasks (never trained on); success on all
        three after every stage                                                      -> success_rate()
Baselines on the same code (--mode; main() sets their three flags in one place): `ire-vla` (the above),
`plain-rl` (after stage 0, PPO on the whole model: no freezing, no SFT stages; the unstable standard), `freeze`
(the backbone never unfrozen again: even stages train only the heads). Fidelity table: at the end of the file.

Run:
    python ire_vla_lite.py --num-iterations 2
    python ire_vla_lite.py --mode plain-rl --num-iterations 2
"""

import csv
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

EXPERT_TASKS = ["reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "button-press-topdown-v3",
                "window-open-v3", "peg-insert-side-v3"]
RL_TASKS, HELDOUT_TASKS = ["window-close-v3", "drawer-close-v3"], ["door-close-v3", "button-press-v3"]


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]  # the name of this experiment
    seed: int = 1  # seed of the experiment
    torch_deterministic: bool = True  # torch.backends.cudnn.deterministic
    threads: int = 1  # torch CPU threads
    mode: Literal["ire-vla", "plain-rl", "freeze"] = "ire-vla"  # plain-rl: PPO on the whole model; freeze: heads only
    expert_tasks: list[str] = field(default_factory=EXPERT_TASKS.copy)  # tasks with demos: data/metaworld-<task>.npz
    rl_tasks: list[str] = field(default_factory=RL_TASKS.copy)  # new tasks learned by online RL (their demos unused)
    heldout_tasks: list[str] = field(default_factory=HELDOUT_TASKS.copy)  # tasks never trained on
    num_iterations: int = 2  # rounds of (RL stage, SFT stage) after stage 0
    max_episode_steps: int = 200  # episode limit of RL rollouts (evaluation uses MetaWorld's 500, as every evaluate())
    d_model: int = 64  # Transformer width
    n_layers: int = 2  # Transformer layers
    n_heads: int = 4  # attention heads
    state_tokens: int = 4  # state tokens the 39-d observation is projected to
    lora_rank: int = 8  # rank r of the LoRA adapters
    lora_alpha: float = 16.0  # LoRA alpha: the adapter's output is scaled by alpha / r (peft's convention; 16 / 8 = 2)
    sft0_steps: int = 3000  # stage 0 SFT steps
    sft_steps: int = 1000  # SFT steps in every even stage
    sft_lr: float = 1e-3  # SFT learning rate
    batch_size: int = 256  # SFT minibatch
    rl_steps: int = 20_000  # env steps per RL stage
    num_envs_per_task: int = 2  # parallel envs per RL task
    num_steps: int = 200  # steps per env per PPO rollout
    rl_lr: float = 3e-4  # PPO learning rate
    gamma: float = 0.99  # discount
    gae_lambda: float = 0.95  # GAE lambda
    update_epochs: int = 5  # PPO epochs
    num_minibatches: int = 4  # PPO minibatches per epoch
    clip_coef: float = 0.2  # PPO clip
    action_std: float = 0.3  # exploration std at the start of an RL stage
    eval_episodes: int = 5  # evaluation episodes per task

    def __post_init__(self):
        if set(self.heldout_tasks) & set(self.expert_tasks + self.rl_tasks):
            raise SystemExit("A held-out task is also trained on: --heldout-tasks must not overlap the expert or "
                             "RL tasks.")
        if not (self.expert_tasks and self.rl_tasks and self.heldout_tasks):
            raise SystemExit("A split has no task: pass at least one task to each of --expert-tasks, --rl-tasks "
                             "and --heldout-tasks.")
        if not 1 <= self.num_minibatches <= len(self.rl_tasks) * self.num_envs_per_task * self.num_steps:
            raise SystemExit("--num-minibatches must be between 1 and the rollout's size (RL tasks x envs per task "
                             "x steps).")


# ---- the model: a small "VLA" (instruction words + state tokens -> Transformer with LoRA -> heads) ----
def task_words(task):
    """'pick-place-v3' -> ['pick', 'place'] (the instruction)."""
    return [w for w in task.split("-") if w != "v3"]


class LoRALinear(nn.Module):
    """y = W x + b + (alpha / r) B A x; A random, B zero, so the adapter adds nothing until B is trained."""

    def __init__(self, inp, out, rank, alpha):
        super().__init__()
        self.base = nn.Linear(inp, out)
        self.A = nn.Parameter(torch.randn(rank, inp) / np.sqrt(inp))
        self.B = nn.Parameter(torch.zeros(out, rank))
        self.scale = alpha / rank

    def forward(self, x):
        return self.base(x) + self.scale * (x @ self.A.T) @ self.B.T


class Block(nn.Module):
    """Pre-norm Transformer block; every linear layer carries LoRA."""

    def __init__(self, d, heads, rank, alpha):
        super().__init__()
        self.h = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.o = LoRALinear(d, 3 * d, rank, alpha), LoRALinear(d, d, rank, alpha)
        self.ff1, self.ff2 = LoRALinear(d, 4 * d, rank, alpha), LoRALinear(4 * d, d, rank, alpha)

    def forward(self, x):  # (B, T, d)
        B, T, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / np.sqrt(d // self.h), -1) @ v
        x = x + self.o(att.transpose(1, 2).reshape(B, T, d))
        return x + self.ff2(torch.relu(self.ff1(self.ln2(x))))


class VLA(nn.Module):
    """Backbone: [CLS] + instruction word tokens + state tokens -> Transformer -> CLS feature.
    Heads: action mean (+ log std parameter) and critic, each a 2-layer MLP on the feature."""

    def __init__(self, vocab, obs_dim, act_dim, args, obs_mean, obs_std):
        super().__init__()
        d = args.d_model
        self.vocab, self.state_tokens = {w: i for i, w in enumerate(vocab)}, args.state_tokens
        self.register_buffer("obs_mean", torch.as_tensor(obs_mean, dtype=torch.float32))
        self.register_buffer("obs_std", torch.as_tensor(obs_std, dtype=torch.float32))
        self.word = nn.Embedding(len(vocab) + 2, d)  # len(vocab): unknown word, len(vocab) + 1: padding
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.state = nn.Linear(obs_dim, args.state_tokens * d)
        self.blocks = nn.ModuleList([Block(d, args.n_heads, args.lora_rank, args.lora_alpha)
                                     for _ in range(args.n_layers)])
        self.ln = nn.LayerNorm(d)
        self.action_head = nn.Sequential(nn.Linear(d, 128), nn.ReLU(), nn.Linear(128, act_dim))
        self.critic_head = nn.Sequential(nn.Linear(d, 128), nn.ReLU(), nn.Linear(128, 1))
        self.log_std = nn.Parameter(torch.full((act_dim,), float(np.log(args.action_std))))

    def tokens(self, task, width=4):
        """The instruction as `width` word ids (unknown words -> len(vocab), padding -> len(vocab) + 1)."""
        ids = [self.vocab.get(w, len(self.vocab)) for w in task_words(task)][:width]
        return torch.tensor(ids + [len(self.vocab) + 1] * (width - len(ids)))

    def backbone(self, obs, words):
        """obs (B, o), words (B, L) word ids -> features (B, d)."""
        s = self.state(((obs - self.obs_mean) / self.obs_std).clamp(-10, 10)).view(len(obs), self.state_tokens, -1)
        x = torch.cat([self.cls.expand(len(obs), -1, -1), self.word(words), s], 1)
        for blk in self.blocks:
            x = blk(x)
        return self.ln(x[:, 0])

    def backbone_params(self, lora: bool):
        """The backbone's base weights (lora=False) or its LoRA adapters (lora=True)."""
        heads = {id(p) for p in self.head_params()}
        return [p for n, p in self.named_parameters()
                if id(p) not in heads and (n.endswith(".A") or n.endswith(".B")) == lora]

    def head_params(self):
        """The action head, its log std and the critic head: all that an RL stage trains."""
        return [*self.action_head.parameters(), *self.critic_head.parameters(), self.log_std]


def pad_words(model, tasks):
    """The instructions of `tasks` as word ids, (len(tasks), 4)."""
    return torch.stack([model.tokens(t) for t in tasks])


# ---- losses ----
def sft_loss(model, obs, words, act):
    """SFT: E ||pi(o, l) - a||^2 on the action head's mean."""
    return ((model.action_head(model.backbone(obs, words)) - act) ** 2).sum(-1).mean()


def ppo_loss(new_logp, old_logp, adv, clip_coef):
    """PPO's clipped surrogate (advantages normalised per minibatch); scalar."""
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    ratio = (new_logp - old_logp).exp()
    return torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip_coef, 1 + clip_coef)).mean()


def value_loss(values, returns):
    """The critic head's regression on the GAE returns; scalar."""
    return ((values - returns) ** 2).mean()


def sample_action(dist):
    """PPO's sample: the raw Gaussian sample a and its log-prob (what the ratio needs), and clip(a, -1, 1), what
    goes to the env and into D_RL. Taking the log-prob of the clipped action would bias the ratio on every
    dimension that sits at +-1 (many, as the demos' actions do)."""
    a = dist.sample()
    return a, dist.log_prob(a).sum(-1), a.clamp(-1, 1)


def gae(rew, val, next_val, done, gamma, lam):
    """GAE over a (T, N) rollout. next_val[t] = V(s_{t+1}) of the true next state: 0 after a termination (success),
    V(final observation) after a truncation (time limit), so a time limit is not mistaken for an end.
    done[t] = 1 at any episode end cuts the recursion. Returns (advantages, returns)."""
    adv, last = torch.zeros_like(rew), torch.zeros(rew.shape[1])
    for t in reversed(range(len(rew))):
        delta = rew[t] + gamma * next_val[t] - val[t]
        last = delta + gamma * lam * (1 - done[t]) * last
        adv[t] = last
    return adv, adv + val


def successful(trajectories):
    """D_RL receives only the trajectories that ended in success."""
    return [t for t in trajectories if t["success"]]


# ---- the stages ----
def sft_stage(model, data, params, steps, args, rng, log, tag):
    """SFT of `params` on data = dict(obs, words, act) (D_e, or D_e united with D_RL). Returns the last loss."""
    opt = torch.optim.Adam(params, lr=args.sft_lr)
    loss = torch.tensor(float("nan"))  # returned as is if a signal skips every step
    for step in log.steps(tqdm(range(steps), desc=tag, leave=False)):  # stops on SIGINT/SIGTERM (Logger)
        idx = torch.as_tensor(rng.integers(0, len(data["act"]), args.batch_size))
        loss = sft_loss(model, data["obs"][idx], data["words"][idx], data["act"][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 250 == 0 or step == steps - 1:
            log.log(step, **{f"losses/{tag}": loss.item()})
    return loss.item()


def rl_stage(model, tasks, args, rng, log, tag, whole_model=False):
    """PPO on the RL tasks, sparse reward 1 on success. whole_model=False: backbone frozen, features computed once
    per step, only the heads train (whole_model=True: the plain-rl baseline). Returns the collected trajectories
    (obs, act, task, success)."""
    envs = [(t, make_env(f"metaworld/{t}", args.seed + 100 * i + j, args.max_episode_steps)())
            for i, t in enumerate(tasks) for j in range(args.num_envs_per_task)]
    params = list(model.parameters()) if whole_model else model.head_params()
    opt = torch.optim.Adam(params, lr=args.rl_lr, eps=1e-5)
    with torch.no_grad():
        model.log_std.fill_(float(np.log(args.action_std)))
    words = pad_words(model, [t for t, _ in envs])
    obs = np.stack([e.reset(seed=int(rng.integers(2**31)))[0] for _, e in envs]).astype(np.float32)
    cur = [{"obs": [], "act": [], "task": t} for t, _ in envs]  # each env's running trajectory
    trajs, N, T = [], len(envs), args.num_steps
    for _ in log.steps(tqdm(range(max(1, args.rl_steps // (N * T))), desc=tag, leave=False)):
        # ---- rollout: T steps of N envs ----
        buf = {k: [] for k in ("obs", "feat", "act", "logp", "val", "rew", "done", "term", "trunc_val")}
        for _ in range(T):
            o = torch.tensor(obs)  # a copy: obs[i] = nxt below overwrites the array in place
            with torch.no_grad():
                f = model.backbone(o, words)
                a, logp, a_env = sample_action(torch.distributions.Normal(model.action_head(f), model.log_std.exp()))
                buf["logp"].append(logp)
                buf["val"].append(model.critic_head(f).squeeze(-1))
            rew, done, term_, trunc_val = (np.zeros(N, np.float32) for _ in range(4))
            for i, (t, env) in enumerate(envs):
                nxt, _, term, trunc, info = env.step(a_env[i].numpy())
                cur[i]["obs"].append(obs[i].copy())  # a copy, not a view of the array overwritten below
                cur[i]["act"].append(a_env[i].numpy())  # D_RL keeps the action the env received
                rew[i], done[i], term_[i] = float(info["success"]), float(term or trunc), float(term)  # sparse reward
                if trunc and not term:  # time limit: bootstrap from the final observation (before the reset)
                    with torch.no_grad():
                        f_end = model.backbone(torch.as_tensor(nxt, dtype=torch.float32)[None], words[i:i + 1])
                        trunc_val[i] = model.critic_head(f_end).item()
                if term or trunc:
                    trajs.append({"obs": np.array(cur[i]["obs"]), "act": np.array(cur[i]["act"]), "task": t,
                                  "success": bool(info["success"])})
                    cur[i] = {"obs": [], "act": [], "task": t}
                    nxt, _ = env.reset()
                obs[i] = nxt
            for k, v in (("obs", o), ("feat", f), ("act", a), ("rew", rew), ("done", done), ("term", term_),
                         ("trunc_val", trunc_val)):
                buf[k].append(torch.as_tensor(v))
        b = {k: torch.stack(v) for k, v in buf.items()}
        # ---- advantages ----
        with torch.no_grad():
            last_v = model.critic_head(model.backbone(torch.as_tensor(obs), words)).squeeze(-1)
        # V(s_{t+1}): the next step's value while the episode runs, 0 after success, V(final obs) after a time limit
        next_val = torch.cat([b["val"][1:], last_v[None]]) * (1 - b["done"]) + b["trunc_val"] * (1 - b["term"])
        adv, ret = gae(b["rew"], b["val"], next_val, b["done"], args.gamma, args.gae_lambda)
        # ---- PPO update of the heads (the whole model for plain-rl) ----
        flat = {k: v.reshape((N * T,) + v.shape[2:]) for k, v in b.items()}
        flat_w, flat_adv, flat_ret = words.repeat(T, 1), adv.reshape(-1), ret.reshape(-1)
        mb = N * T // args.num_minibatches
        for _ in range(args.update_epochs):
            perm = torch.randperm(N * T)
            for s in range(0, N * T, mb):
                i = perm[s:s + mb]
                f = model.backbone(flat["obs"][i], flat_w[i]) if whole_model else flat["feat"][i]
                mean = model.action_head(f)
                if not torch.isfinite(mean).all():
                    raise SystemExit(f"The policy's actions became NaN in {tag}: lower --rl-lr (PPO on the whole "
                                     "model, the plain-rl baseline, is the unstable case the paper describes).")
                logp = torch.distributions.Normal(mean, model.log_std.exp()).log_prob(flat["act"][i]).sum(-1)  # raw a
                loss = ppo_loss(logp, flat["logp"][i], flat_adv[i], args.clip_coef) + 0.5 * value_loss(
                    model.critic_head(f).squeeze(-1), flat_ret[i])
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(params, 0.5)
                opt.step()
        success = float(np.mean([t["success"] for t in trajs[-50:]])) if trajs else 0.0
        log.log(len(trajs), **{f"charts/{tag}_success": success})
    return trajs


def success_rate(model, task, episodes, args):
    """evaluate() with the instruction of `task`: deterministic (the action head's mean) success rate."""
    words = model.tokens(task)[None]

    def act(obs):
        with torch.no_grad():
            o = torch.as_tensor(obs, dtype=torch.float32)[None]
            return model.action_head(model.backbone(o, words))[0].clamp(-1, 1).numpy()

    return evaluate(act, f"metaworld/{task}", episodes, 10_000 + args.seed)[1]


def main():
    args = tyro.cli(Args)
    run_name = f"metaworld__{args.exp_name}__{args.mode}__{args.seed}__{int(time.time())}"
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    # ---- the three modes differ only here ----
    rl_whole_model = args.mode == "plain-rl"  # plain-rl: PPO on the whole model, nothing frozen
    sft_stages = args.mode != "plain-rl"  # plain-rl: no SFT stage after stage 0
    sft_lora = args.mode != "freeze"  # freeze: the backbone is never unfrozen, even stages train only the heads

    # ---- D_e: the expert tasks' demos ----
    data_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
    obs_l, act_l, task_l = [], [], []
    for t in args.expert_tasks:
        d = load_demos(os.path.join(data_dir, f"metaworld-{t}.npz"), make_env(f"metaworld/{t}", args.seed)())
        obs_l.append(d["observations"])
        act_l.append(d["actions"])
        task_l += [t] * len(d["actions"])
    obs_e, act_e = np.concatenate(obs_l), np.concatenate(act_l)
    vocab = sorted({w for t in args.expert_tasks + args.rl_tasks for w in task_words(t)})
    model = VLA(vocab, obs_e.shape[1], act_e.shape[1], args, obs_e.mean(0), obs_e.std(0) + 1e-3)
    D_e = {"obs": torch.as_tensor(obs_e), "act": torch.as_tensor(act_e), "words": pad_words(model, task_l)}
    print(f"D_e: {len(act_e)} transitions from {len(args.expert_tasks)} tasks; vocabulary {vocab}")
    log = Logger(run_name, args)
    splits = {"expert": args.expert_tasks, "rl": args.rl_tasks, "heldout": args.heldout_tasks}
    results = []

    def evaluate_splits(stage):
        if log.interrupted:  # SIGINT/SIGTERM: straight to saving the model
            return
        row = {s: float(np.mean([success_rate(model, t, args.eval_episodes, args) for t in ts]))
               for s, ts in splits.items()}
        log.log(stage, **{f"eval/success_{s}": v for s, v in row.items()})
        results.append((stage, row))
        print(f"stage {stage}: success expert {row['expert']:.2f}, rl {row['rl']:.2f}, held-out {row['heldout']:.2f}")

    # ---- stage 0: SFT on D_e of the base weights and heads (the lite backbone has no pre-training: stage 0 is its
    # pre-training); LoRA stays zero, so the later SFT stages adapt a trained base through LoRA, as in the paper ----
    sft_stage(model, D_e, model.backbone_params(lora=False) + model.head_params(), args.sft0_steps, args, rng, log,
              "sft0")
    evaluate_splits(0)
    D_rl = {"obs": [], "act": [], "words": []}
    for it in log.steps(range(args.num_iterations)):
        # ---- odd stage: RL of the heads, backbone frozen (the plain-rl baseline: the whole model) ----
        trajs = rl_stage(model, args.rl_tasks, args, rng, log, f"rl{it + 1}", whole_model=rl_whole_model)
        wins = successful(trajs)
        for t in wins:
            D_rl["obs"].append(torch.as_tensor(t["obs"], dtype=torch.float32))
            D_rl["act"].append(torch.as_tensor(t["act"], dtype=torch.float32))
            D_rl["words"].append(model.tokens(t["task"])[None].repeat(len(t["act"]), 1))
        log.log(2 * it + 1, **{"charts/d_rl_trajectories": sum(len(x) > 0 for x in D_rl["act"]),
                               "charts/rl_success_rate": len(wins) / max(len(trajs), 1)})
        evaluate_splits(2 * it + 1)
        if not sft_stages:  # the plain-rl baseline
            continue
        # ---- even stage: SFT of LoRA + heads on D_e united with D_RL (the freeze baseline: heads only) ----
        data = {k: torch.cat([D_e[k]] + D_rl[k]) for k in D_e}
        params = model.head_params() + (model.backbone_params(lora=True) if sft_lora else [])
        sft_stage(model, data, params, args.sft_steps, args, rng, log, f"sft{it + 1}")
        evaluate_splits(2 * it + 2)

    return log.finish({"model": model.state_dict(), "vocab": vocab, "results": results})


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


# Fidelity to the official code (none is public: the paper, arXiv 2501.16664, Sec. IV and Alg. 1, is the source)
# | design choice | official (source) | this file | why different |
# |---|---|---|---|
# | backbone | BLIP-2 3B VLM on images + instruction, LoRA (Sec. IV) | 2-layer Transformer, d 64, over instruction
#   word tokens and 4 state tokens; LoRA r 8, alpha 16 (scale 2) on every linear layer | CPU budget; no images in
#   the state-based MetaWorld used here |
# | stage 0 | SFT of the VLM (LoRA) + action head on expert data | SFT of the base weights + heads; LoRA kept at
#   zero | the lite backbone has no pre-training: its base weights must learn in stage 0, LoRA then adapts them
#   later |
# | RL stages | VLM frozen, action + critic heads trained online, sparse success reward | same | - |
# | RL algorithm | PPO in simulation (real robot: SACfD) | PPO, log-prob of the raw sample, clipped action to the
#   env, time limits bootstrapped | - |
# | SFT stages | whole model (LoRA + head) on D_e united with D_RL | LoRA + heads (heads only for --mode freeze) |
#   - |
# | tasks | MetaWorld: 25 expert tasks x 50 demos; RL and held-out tasks; Franka Kitchen | 8 expert, 2 RL, 2
#   held-out MetaWorld v3 tasks; demos from data/metaworld-<task>.npz | CPU budget |
# | iterations, budgets | not all given in the paper | 2 iterations; --rl-steps per RL stage; 200-step RL
#   episodes, 500-step evaluation | CPU budget |

if __name__ == "__main__":
    sys.exit(main())

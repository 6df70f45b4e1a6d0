"""iRe-VLA lite: SFT and frozen-backbone RL in alternation, on MetaWorld, with a small "VLA" that trains on a CPU.

Paper: Guo et al., "Improving Vision-Language-Action Model with Online Reinforcement Learning", ICRA 2025,
arXiv 2501.16664. "Lite": the 3B BLIP-2 VLM becomes a small Transformer over word tokens of the instruction and
state tokens; everything else follows the paper's pipeline.

Pipeline (Sec. IV, Alg. 1) -> code
    Model: backbone ("VLM") = word embedding of the task name + linear state tokens + a Transformer with LoRA
        adapters (rank --lora-rank, B zero-initialised so LoRA starts as the identity) on every linear layer;
        an action head (Gaussian) and a critic head of the same shape with one output.      -> VLA, LoRALinear
    Stage 0: SFT of the whole model on the expert tasks' demos D_e: min E ||pi(o, l) - a||^2.   -> sft_loss()
    Odd stages (RL): the backbone (base weights and LoRA) frozen, online RL trains only the action and critic
        heads on the RL tasks with the sparse reward 1 on success. PPO here (the paper's simulation RL); the
        frozen backbone's features are computed once per step. Successful trajectories go into D_RL. -> rl_stage()
    Even stages (SFT): LoRA + heads trained on D_e united with D_RL, so nothing learned is forgotten. -> sft_stage()
    Splits: expert tasks (in the demos), RL tasks (new tasks, no demos), held-out tasks (never trained on);
    success on all three after every stage.
Baselines on the same code (--mode): `ire-vla` (the above), `plain-rl` (after stage 0, PPO on the whole model,
no freezing and no SFT stages: the unstable standard), `freeze` (the backbone is never unfrozen again: even stages
train only the heads).

Run:
    python ire_vla_lite.py --num-iterations 2
    python ire_vla_lite.py --mode plain-rl --num-iterations 2
"""

import csv
import os
import random
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
    mode: Literal["ire-vla", "plain-rl", "freeze"] = "ire-vla"
    """ire-vla; plain-rl: RL on the whole model; freeze: the backbone never unfrozen after stage 0"""
    expert_tasks: list[str] = field(default_factory=lambda: ["reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3",
                                                             "button-press-topdown-v3", "window-open-v3", "peg-insert-side-v3"])
    """tasks with demos (data/metaworld-<task>.npz)"""
    rl_tasks: list[str] = field(default_factory=lambda: ["window-close-v3", "drawer-close-v3"])
    """new tasks learned by online RL (their demos are not used)"""
    heldout_tasks: list[str] = field(default_factory=lambda: ["door-close-v3", "button-press-v3"])
    """tasks never trained on"""
    num_iterations: int = 2
    """rounds of (RL stage, SFT stage) after stage 0"""
    max_episode_steps: int = 200
    """episode limit for RL rollouts (evaluation uses MetaWorld's 500, as every file's evaluate())"""
    d_model: int = 64
    """Transformer width"""
    n_layers: int = 2
    """Transformer layers"""
    n_heads: int = 4
    """attention heads"""
    state_tokens: int = 4
    """state tokens the 39-d observation is projected to"""
    lora_rank: int = 8
    """rank of the LoRA adapters"""
    sft0_steps: int = 3000
    """stage 0 SFT steps"""
    sft_steps: int = 1000
    """SFT steps in every even stage"""
    sft_lr: float = 1e-3
    """SFT learning rate"""
    batch_size: int = 256
    """SFT minibatch"""
    rl_steps: int = 20_000
    """env steps per RL stage"""
    num_envs_per_task: int = 2
    """parallel envs per RL task"""
    num_steps: int = 200
    """steps per env per PPO rollout"""
    rl_lr: float = 3e-4
    """PPO learning rate"""
    gamma: float = 0.99
    """discount"""
    gae_lambda: float = 0.95
    """GAE lambda"""
    update_epochs: int = 5
    """PPO epochs"""
    num_minibatches: int = 4
    """PPO minibatches per epoch"""
    clip_coef: float = 0.2
    """PPO clip"""
    action_std: float = 0.3
    """exploration std at the start of an RL stage"""
    eval_episodes: int = 5
    """evaluation episodes per task"""


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


def task_words(task):
    """'pick-place-v3' -> ['pick', 'place'] (the instruction)."""
    return [w for w in task.split("-") if w != "v3"]


# ----------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------
class LoRALinear(nn.Module):
    """y = W x + b + (alpha / r) B A x; A random, B zero, so the adapter starts as the identity map."""

    def __init__(self, inp, out, rank):
        super().__init__()
        self.base = nn.Linear(inp, out)
        self.A = nn.Parameter(torch.randn(rank, inp) / np.sqrt(inp))
        self.B = nn.Parameter(torch.zeros(out, rank))
        self.scale = 1.0

    def forward(self, x):
        return self.base(x) + self.scale * (x @ self.A.T) @ self.B.T


class Block(nn.Module):
    """Pre-norm Transformer block; every linear layer carries LoRA."""

    def __init__(self, d, heads, rank):
        super().__init__()
        self.h = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.o = LoRALinear(d, 3 * d, rank), LoRALinear(d, d, rank)
        self.ff1, self.ff2 = LoRALinear(d, 4 * d, rank), LoRALinear(4 * d, d, rank)

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
        self.vocab, self.k = {w: i for i, w in enumerate(vocab)}, args.state_tokens
        self.register_buffer("obs_mean", torch.as_tensor(obs_mean, dtype=torch.float32))
        self.register_buffer("obs_std", torch.as_tensor(obs_std, dtype=torch.float32))
        self.word = nn.Embedding(len(vocab) + 2, d)  # len(vocab): unknown word, len(vocab) + 1: padding
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.state = nn.Linear(obs_dim, args.state_tokens * d)
        self.blocks = nn.ModuleList([Block(d, args.n_heads, args.lora_rank) for _ in range(args.n_layers)])
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
        s = self.state(((obs - self.obs_mean) / self.obs_std).clamp(-10, 10)).view(len(obs), self.k, -1)
        x = torch.cat([self.cls.expand(len(obs), -1, -1), self.word(words), s], 1)
        for blk in self.blocks:
            x = blk(x)
        return self.ln(x[:, 0])

    def backbone_params(self, lora: bool):
        """The backbone's base weights (lora=False) or its LoRA adapters (lora=True)."""
        heads = {id(p) for p in [*self.action_head.parameters(), *self.critic_head.parameters(), self.log_std]}
        return [p for n, p in self.named_parameters() if id(p) not in heads and (n.endswith(".A") or n.endswith(".B")) == lora]

    def head_params(self):
        return [*self.action_head.parameters(), *self.critic_head.parameters(), self.log_std]


# ----------------------------------------------------------------------------------------------------------
# Losses and stages
# ----------------------------------------------------------------------------------------------------------
def sft_loss(model, obs, words, act):
    """SFT: E ||pi(o, l) - a||^2 on the action head's mean."""
    return ((model.action_head(model.backbone(obs, words)) - act) ** 2).sum(-1).mean()


def ppo_loss(new_logp, old_logp, adv, clip_coef):
    """PPO's clipped surrogate (advantages normalised per minibatch); scalar."""
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    ratio = (new_logp - old_logp).exp()
    return torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip_coef, 1 + clip_coef)).mean()


def successful(trajectories):
    """D_RL receives only the trajectories that ended in success."""
    return [t for t in trajectories if t["success"]]


def pad_words(model, tasks):
    return torch.stack([model.tokens(t) for t in tasks])


def sft_stage(model, data, params, steps, args, rng, log, tag):
    """SFT of `params` on data = dict(obs, words, act) (D_e united with D_RL)."""
    opt = torch.optim.Adam(params, lr=args.sft_lr)
    for step in tqdm(range(steps), desc=tag, leave=False):
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
    per step, only the heads train. Returns the collected trajectories (obs, words, actions, success)."""
    envs = [(t, make_env(f"metaworld/{t}", args.seed + 100 * i + j, args.max_episode_steps)()) for i, t in enumerate(tasks)
            for j in range(args.num_envs_per_task)]
    params = list(model.parameters()) if whole_model else model.head_params()
    opt = torch.optim.Adam(params, lr=args.rl_lr, eps=1e-5)
    with torch.no_grad():
        model.log_std.fill_(float(np.log(args.action_std)))
    words = pad_words(model, [t for t, _ in envs])
    obs = np.stack([e.reset(seed=int(rng.integers(2**31)))[0] for _, e in envs]).astype(np.float32)
    cur = [{"obs": [], "act": [], "task": t} for t, _ in envs]
    trajs, N, T = [], len(envs), args.num_steps
    for _ in tqdm(range(max(1, args.rl_steps // (N * T))), desc=tag, leave=False):
        buf = {k: [] for k in ("obs", "feat", "act", "logp", "val", "rew", "done")}
        for _ in range(T):
            o = torch.as_tensor(obs)
            with torch.no_grad():
                f = model.backbone(o, words)
                dist = torch.distributions.Normal(model.action_head(f), model.log_std.exp())
                a = dist.sample().clamp(-1, 1)
                buf["logp"].append(dist.log_prob(a).sum(-1))
                buf["val"].append(model.critic_head(f).squeeze(-1))
            rew, done = np.zeros(N, np.float32), np.zeros(N, np.float32)
            for i, (t, env) in enumerate(envs):
                nxt, _, term, trunc, info = env.step(a[i].numpy())
                cur[i]["obs"].append(obs[i])
                cur[i]["act"].append(a[i].numpy())
                rew[i], done[i] = float(info["success"]), float(term or trunc)
                if term or trunc:
                    trajs.append({"obs": np.array(cur[i]["obs"]), "act": np.array(cur[i]["act"]), "task": t,
                                  "success": bool(info["success"])})
                    cur[i] = {"obs": [], "act": [], "task": t}
                    nxt, _ = env.reset()
                obs[i] = nxt
            for k, v in (("obs", o), ("feat", f), ("act", a), ("rew", torch.as_tensor(rew)), ("done", torch.as_tensor(done))):
                buf[k].append(v)
        b = {k: torch.stack(v) for k, v in buf.items()}
        with torch.no_grad():
            last_v = model.critic_head(model.backbone(torch.as_tensor(obs), words)).squeeze(-1)
        adv, last = torch.zeros_like(b["rew"]), torch.zeros(N)
        for t in reversed(range(T)):  # success terminates (no bootstrap); time limits are rare and treated alike
            nv = last_v if t == T - 1 else b["val"][t + 1]
            delta = b["rew"][t] + args.gamma * nv * (1 - b["done"][t]) - b["val"][t]
            last = delta + args.gamma * args.gae_lambda * (1 - b["done"][t]) * last
            adv[t] = last
        ret = adv + b["val"]
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
                    raise SystemExit(f"The policy's actions became NaN in {tag}: lower --rl-lr (PPO on the whole model, "
                                     "the plain-rl baseline, is the unstable case the paper describes).")
                logp = torch.distributions.Normal(mean, model.log_std.exp()).log_prob(flat["act"][i]).sum(-1)
                loss = ppo_loss(logp, flat["logp"][i], flat_adv[i], args.clip_coef) + 0.5 * (
                    (model.critic_head(f).squeeze(-1) - flat_ret[i]) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(params, 0.5)
                opt.step()
        log.log(len(trajs), **{f"charts/{tag}_success": float(np.mean([t["success"] for t in trajs[-50:]])) if trajs else 0.0})
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
    if set(args.heldout_tasks) & set(args.expert_tasks + args.rl_tasks):
        raise SystemExit("A held-out task is also trained on: --heldout-tasks must not overlap the expert or RL tasks.")

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
        row = {s: float(np.mean([success_rate(model, t, args.eval_episodes, args) for t in ts])) for s, ts in splits.items()}
        log.log(stage, **{f"eval/success_{s}": v for s, v in row.items()})
        results.append((stage, row))
        print(f"stage {stage}: success expert {row['expert']:.2f}, rl {row['rl']:.2f}, held-out {row['heldout']:.2f}")

    # ---- stage 0: SFT of the whole model on D_e ----
    sft_stage(model, D_e, list(model.parameters()), args.sft0_steps, args, rng, log, "sft0")
    evaluate_splits(0)
    D_rl = {"obs": [], "act": [], "words": []}
    for it in range(args.num_iterations):
        # ---- odd stage: RL (backbone frozen, except for plain-rl) ----
        trajs = rl_stage(model, args.rl_tasks, args, rng, log, f"rl{it + 1}", whole_model=args.mode == "plain-rl")
        wins = successful(trajs)
        for t in wins:
            D_rl["obs"].append(torch.as_tensor(t["obs"], dtype=torch.float32))
            D_rl["act"].append(torch.as_tensor(t["act"], dtype=torch.float32))
            D_rl["words"].append(model.tokens(t["task"])[None].repeat(len(t["act"]), 1))
        log.log(2 * it + 1, **{"charts/d_rl_trajectories": sum(len(x) > 0 for x in D_rl["act"]),
                               "charts/rl_success_rate": len(wins) / max(len(trajs), 1)})
        evaluate_splits(2 * it + 1)
        if args.mode == "plain-rl":
            continue
        # ---- even stage: SFT on D_e united with D_RL (LoRA + heads; heads only for freeze) ----
        data = {k: torch.cat([D_e[k]] + D_rl[k]) for k in D_e}
        params = model.head_params() + ([] if args.mode == "freeze" else model.backbone_params(lora=True))
        sft_stage(model, data, params, args.sft_steps, args, rng, log, f"sft{it + 1}")
        evaluate_splits(2 * it + 2)

    model_path = os.path.join(log.dir, "model.pt")
    torch.save({"model": model.state_dict(), "vocab": vocab, "results": results, "args": vars(args)}, model_path)
    log.close()
    print(f"model: {model_path}; metrics: {os.path.join(log.dir, 'metrics.csv')} (TensorBoard: tensorboard --logdir runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GRAPE (lite): iterative trajectory-wise preference optimisation (TPO) of a small VLA, on MetaWorld, on a CPU.

Paper: Zhang et al., "GRAPE: Generalizing Robot Policy via Preference Alignment", 2024, arXiv 2411.19309; code:
github.com/aiming-lab/GRAPE (OpenVLA-7B, TPO-LoRA). "Lite": ire_vla_lite.py's small word + state Transformer (copied)
with a Gaussian head; stage costs hand-written per task (paper: from a VLM). Differences: the table at the end.

Eq. / idea -> code
    SFT: pi_SFT = argmin E[-log pi(a | o, q)] on the demos; base weights + Gaussian head; LoRA stays 0 -> sft_loss()
    Iterations 1..K, each from pi_ref = the policy at its start, frozen (as one run of the official finetune.py):
      sample: per training task, --num-init-states starts, M = --samples-per-state rollouts from each; raw Gaussian
        samples and their log-probs (the env gets them clipped to [-1, 1])  -> sample_groups(), sample_trajectories()
      score (GCPG, Eq. 9): R(zeta) = lambda_1 R_self + lambda_2 R_ext + lambda_3 I_success      -> gcpg_reward()
        R_self = sum_t log max(p_t, 0.05), p_t = pi(a_t | o_t, q) capped at 1                    -> self_reward()
        R_ext = (stages done + prod_i exp(-beta_ext max(0, C_i - thr))) / (stages + 1)  -> external_reward(),
            stages written per task in STAGES, C_i summed over the steps spent in stage i      -> stage_costs()
      pair: in each group of rollouts from one start, the top-m with the bottom-m    -> pair_groups(), make_pairs()
      update (TPO, Eq. 7): L = -E log sigmoid(beta (log pi(zeta_w)/pi_ref(zeta_w) - log pi(zeta_l)/pi_ref(zeta_l))),
        log pi(zeta) = sum_t log pi(a_t | o_t, q); LoRA + head train  -> preference_margins(), tpo_loss(), tpo_epoch()
    Step-wise DPO (the paper's baseline): --tpo-window 1; the official code's 8-step windows: 8    -> tpo_windows()

Run:
    python grape_tpo.py                                         # GRAPE (GCPG ranking, whole trajectories)
    python grape_tpo.py --lambda-self 0 --lambda-ext 0          # TPO with success-only ranking
    python grape_tpo.py --tpo-window 1                          # step-wise DPO
"""

import copy
import csv
import os
import signal
import sys
import time
from dataclasses import dataclass, field

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
    threads: int = 1  # torch CPU threads
    # in-domain tasks, with demos (data/metaworld-<task>.npz): SFT, then sampling and TPO
    train_tasks: list[str] = field(
        default_factory=lambda: ["reach-v3", "push-v3", "pick-place-v3", "peg-insert-side-v3"])
    # unseen tasks, never trained on: the training tasks with a wall in the way (and an unknown word)
    heldout_tasks: list[str] = field(default_factory=lambda: ["reach-wall-v3", "push-wall-v3", "pick-place-wall-v3"])
    num_demo_episodes: int = 10  # demo episodes per training task used for SFT (the first ones in the file)
    d_model: int = 64  # Transformer width
    n_layers: int = 2  # Transformer layers
    n_heads: int = 4  # attention heads
    state_tokens: int = 4  # state tokens the 39-d observation is projected to
    lora_rank: int = 8  # rank r of the LoRA adapters
    lora_alpha: float = 16.0  # LoRA alpha: the adapter's output is scaled by alpha / r
    sft_steps: int = 3000  # SFT steps (Gaussian NLL)
    sft_lr: float = 1e-3  # SFT learning rate
    batch_size: int = 256  # SFT minibatch
    num_iterations: int = 3  # K: rounds of (sample, score, pair, TPO update)
    num_init_states: int = 4  # initial states per training task per iteration
    samples_per_state: int = 4  # M: rollouts of the stochastic policy from each initial state
    num_pairs: int = 1  # m: the top-m rollouts of a group are paired with its bottom-m
    max_episode_steps: int = 500  # rollout limit when sampling (MetaWorld's 500, as evaluate())
    beta: float = 0.1  # beta of the TPO loss (official: 0.1)
    tpo_window: int = 0  # 0: one preference per trajectory (TPO); n: one per n-step window (1: step DPO; 8: official)
    tpo_lr: float = 1e-4  # TPO learning rate (AdamW, a fresh one each iteration)
    tpo_weight_decay: float = 0.01  # AdamW weight decay of the adapters and the head, not log_std (official: 0.01)
    tpo_epochs: int = 10  # passes over an iteration's windows (or pairs), one optimiser step each
    lambda_self: float = 0.01  # lambda_1: weight of R_self, the summed clipped log-likelihood (official: 0.01)
    lambda_ext: float = 1.0  # lambda_2: weight of R_ext, the staged external reward
    lambda_success: float = 5.0  # lambda_3: weight of I_success (official: 5)
    beta_ext: float = 0.001  # R_ext: exp(-beta_ext * max(0, C_i - threshold)) per stage, C_i in cm x steps
    cost_threshold: float = 0.0  # R_ext: the cost (cm x steps) a stage may take for free
    stage_tolerance: float = 3.0  # cm: a stage ends (the next begins) at the first step its distance is within this
    eval_episodes: int = 10  # deterministic evaluation episodes per task

    def __post_init__(self):  # every check of the command line, each failure one sentence
        if set(self.heldout_tasks) & set(self.train_tasks):
            raise SystemExit("A held-out task is also trained on: --heldout-tasks must not overlap --train-tasks.")
        if self.samples_per_state < 2 or not 1 <= self.num_pairs <= self.samples_per_state // 2:
            raise SystemExit(f"--num-pairs ({self.num_pairs}) must be between 1 and half of --samples-per-state "
                             f"({self.samples_per_state}), which must be at least 2: a pair needs two rollouts.")


# ---- the model: ire_vla_lite.py's backbone, with a Gaussian head of learned std and no critic ----
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
    Head: Gaussian pi(a | o, q) = N(mean(feature), exp(log_std)^2), log_std a learned parameter per dimension."""

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
        self.log_std = nn.Parameter(torch.full((act_dim,), float(np.log(0.3))))

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

    def dist(self, obs, words):
        """pi(. | o, q) as a Normal over the raw action (B, act_dim)."""
        return torch.distributions.Normal(self.action_head(self.backbone(obs, words)),
                                          self.log_std.clamp(-5, 1).exp(), validate_args=False)

    def act(self, obs, task):
        """evaluate()'s deterministic action for one observation: the Gaussian's mean, clipped to [-1, 1]."""
        with torch.no_grad():
            o = torch.as_tensor(obs, dtype=torch.float32)[None]
            return self.action_head(self.backbone(o, self.tokens(task)[None]))[0].clamp(-1, 1).numpy()

    def lora_params(self):
        return [p for n, p in self.named_parameters() if n.endswith(".A") or n.endswith(".B")]

    def base_params(self):
        """What SFT trains: every weight but the LoRA adapters (the Gaussian head included)."""
        lora = {id(p) for p in self.lora_params()}
        return [p for p in self.parameters() if id(p) not in lora]

    def tpo_param_groups(self, weight_decay):
        """What TPO trains: LoRA (TPO-LoRA) and the Gaussian head, with weight decay; log_std without (std -> 1)."""
        return [{"params": self.lora_params() + [*self.action_head.parameters()], "weight_decay": weight_decay},
                {"params": [self.log_std], "weight_decay": 0.0}]


# ---- losses (pure functions) ----
def sft_loss(model, obs, words, act):
    """SFT: the Gaussian NLL E[-log pi(a | o, q)] (mean and std); scalar."""
    return -model.dist(obs, words).log_prob(act).sum(-1).mean()


def step_log_probs(model, tr, steps=slice(None)):
    """log pi(a_t | o_t, q) of the steps of a rollout tr (obs (T, o), raw actions (T, a), task) under model: (T,)."""
    obs, words = torch.as_tensor(tr["obs"][steps]), model.tokens(tr["task"])[None]
    return model.dist(obs, words.expand(len(obs), -1)).log_prob(torch.as_tensor(tr["act"][steps])).sum(-1)


def preference_margins(logp_w, ref_w, logp_l, ref_l):
    """The margin log pi(zeta_w)/pi_ref(zeta_w) - log pi(zeta_l)/pi_ref(zeta_l) (Eq. 7): per-step log-probs (T_w,),
    (T_w,), (T_l,), (T_l,), both truncated to the shorter length T, summed over the T steps; returns (1,)."""
    T = min(len(logp_w), len(logp_l))
    return ((logp_w[:T] - ref_w[:T]) - (logp_l[:T] - ref_l[:T])).sum()[None]


def tpo_loss(margins, beta):
    """L_TPO = -E[log sigmoid(beta * margin)] (Eq. 7); scalar."""
    return -F.logsigmoid(beta * margins).mean()


# ---- GCPG reward (Eq. 9): R = lambda_1 R_self + lambda_2 R_ext + lambda_3 I_success ----
# Stages written by hand from MetaWorld's 39-d state o (T, 39) (hand xyz 0:3, object xyz 4:7, goal xyz 36:39), one
# per-step distance (m) per stage, in the task's order; the paper has a VLM propose the stages and keypoints.
HAND, OBJ, GOAL = slice(0, 3), slice(4, 7), slice(36, 39)
REACH_OBJ = ("reach the object", lambda o: np.linalg.norm(o[:, HAND] - o[:, OBJ], axis=-1))
OBJ_TO_GOAL = ("bring the object to the goal", lambda o: np.linalg.norm(o[:, OBJ] - o[:, GOAL], axis=-1))
REACH_GOAL = ("reach the goal", lambda o: np.linalg.norm(o[:, HAND] - o[:, GOAL], axis=-1))
LIFT = ("lift the object", lambda o: np.maximum(0.0, 0.05 - (o[:, 6] - o[0, 6])))  # short of 5 cm above its start
STAGES = {
    "reach-v3": [REACH_GOAL],
    "pick-place-v3": [REACH_OBJ, LIFT, ("place it at the goal", OBJ_TO_GOAL[1])],
    "peg-insert-side-v3": [REACH_OBJ, ("lift the peg", LIFT[1]), ("insert it", OBJ_TO_GOAL[1])],
    "reach-wall-v3": [REACH_GOAL],
    "pick-place-wall-v3": [REACH_OBJ, LIFT, ("place it at the goal", OBJ_TO_GOAL[1])],
}
DEFAULT_STAGES = [REACH_OBJ, OBJ_TO_GOAL]  # push, doors, drawers, windows, buttons: reach the handle, move it


def stage_costs(obs, task, tolerance):
    """C_i (cm x steps): stage i's distance summed over its steps, from the end of stage i - 1 to the first step its
    distance is within `tolerance` cm (or the end); obs (T, 39) -> C (number of stages,), stages completed."""
    costs, t0, done = [], 0, 0
    for _, fn in STAGES.get(task, DEFAULT_STAGES):
        d = 100.0 * fn(obs)[t0:]
        within = np.flatnonzero(d <= tolerance)
        t1 = int(within[0]) + 1 if len(within) else len(d)
        costs.append(float(d[:t1].sum()))
        t0, done = t0 + t1, done + (len(within) > 0)
    return np.array(costs), done


def external_reward(costs, done, beta_ext, threshold):
    """R_ext = (stages done + prod_i exp(-beta_ext max(0, C_i - thr))) / (stages + 1): progress, then cost, ranks."""
    return float((done + np.exp(-beta_ext * np.maximum(0.0, np.asarray(costs) - threshold).sum())) / (len(costs) + 1))


def self_reward(logp):
    """R_self = sum_t log max(p_t, 0.05), p_t = pi(a_t | o_t, q) at sampling, capped at 1 (every term <= 0)."""
    return float(np.sum(np.clip(logp, np.log(0.05), 0.0)))


def gcpg_reward(r_self, r_ext, success, lambda_self, lambda_ext, lambda_success):
    """Eq. 9: lambda_1 R_self + lambda_2 R_ext + lambda_3 I_success."""
    return lambda_self * r_self + lambda_ext * r_ext + lambda_success * float(success)


def make_pairs(scores, m):
    """(winner, loser) indices: the i-th best with the i-th worst of one group, i < m; equal scores are skipped."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    pairs = []
    for i in range(min(m, len(order) // 2)):
        w, lo = order[i], order[-1 - i]
        if scores[w] > scores[lo]:
            pairs.append((int(w), int(lo)))
    return pairs


def pair_groups(scores, M, m):
    """make_pairs() within each group of M consecutive rollouts (one start); (winner, loser) indices into scores."""
    return [(g + w, g + lo) for g in range(0, len(scores) - M + 1, M) for w, lo in make_pairs(scores[g:g + M], m)]


# ---- sampling and the TPO update ----
def task_words(task):
    """'pick-place-v3' -> ['pick', 'place'] (the instruction)."""
    return [w for w in task.split("-") if w != "v3"]


def reset_to(env, task_index, seed):
    """Reset an MT1 env to its task_index-th goal/object placement (else drawn by an RNG that reset(seed) misses)."""
    env.get_wrapper_attr("toggle_sample_tasks_on_reset")(False)
    env.unwrapped.set_task(env.get_wrapper_attr("tasks")[task_index])
    return env.reset(seed=int(seed))[0]


def sample_trajectories(model, envs, tasks, starts, max_steps):
    """One rollout per env in lockstep (one batched forward per step), env i from reset_to(env, *starts[i]) with the
    instruction tasks[i]; per rollout: obs (T, o), raw actions (T, a), their log-probs (T,), success, task."""
    words = torch.stack([model.tokens(t) for t in tasks])
    obs = np.stack([reset_to(env, *start) for env, start in zip(envs, starts)]).astype(np.float32)
    live = np.ones(len(envs), bool)
    out = [{"obs": [], "act": [], "logp": [], "success": False, "task": t} for t in tasks]
    for _ in range(max_steps):
        idx = np.flatnonzero(live)
        if len(idx) == 0:
            break
        with torch.no_grad():
            dist = model.dist(torch.as_tensor(obs[idx]), words[idx])
            a = dist.sample()  # the raw Gaussian sample: TPO's log-probs are of this
            logp = dist.log_prob(a).sum(-1)
        for j, i in enumerate(idx):
            nxt, _, term, trunc, info = envs[i].step(a[j].clamp(-1, 1).numpy())  # the env gets it clipped
            out[i]["obs"].append(obs[i].copy())
            out[i]["act"].append(a[j].numpy())
            out[i]["logp"].append(float(logp[j]))
            if term or trunc:
                live[i], out[i]["success"] = False, bool(info["success"])
            obs[i] = nxt
    return [{**r, "obs": np.array(r["obs"], np.float32), "act": np.array(r["act"], np.float32),
             "logp": np.array(r["logp"], np.float32)} for r in out]


def sample_groups(model, envs, tasks, M, num_init_states, max_steps, rng):
    """num_init_states rounds of sample_trajectories(); each task's M envs share a start (MT1 placement, seed)."""
    trajs, n_tasks = [], len(envs) // M
    for _ in range(num_init_states):
        starts = list(zip(rng.integers(0, 50, n_tasks), rng.integers(0, 2**31, n_tasks)))
        trajs += sample_trajectories(model, envs, tasks, [st for st in starts for _ in range(M)], max_steps)
    return trajs


def tpo_windows(trajs, pairs, window, rng):
    """As finetune.py: every stride-1 `window`-step window (0: all) of every pair cut to its shorter rollout, all
    pairs' windows flattened and shuffled once: [(pair index, steps)], one optimiser step each."""
    units = []
    for p, (w, lo) in enumerate(pairs):
        T = min(len(trajs[w]["act"]), len(trajs[lo]["act"]))
        n = T if window <= 0 else min(window, T)
        units += [(p, slice(t, t + n)) for t in range(T - n + 1)]
    return [units[i] for i in rng.permutation(len(units))]


def tpo_epoch(model, opt, trajs, pairs, windows, ref_logp, beta):
    """A pass over the windows in their order, an optimiser step per window on tpo_loss() alone; losses, margins."""
    losses, margins = [], []
    for p, steps in windows:
        w, lo = pairs[p]
        margin = preference_margins(step_log_probs(model, trajs[w], steps), ref_logp[w][steps],
                                    step_log_probs(model, trajs[lo], steps), ref_logp[lo][steps])
        loss = tpo_loss(margin, beta)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        margins.append(margin.mean().item())
    return losses, margins


def main():
    args = tyro.cli(Args)
    run_name = f"metaworld__{args.exp_name}__{args.seed}__{int(time.time())}"
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)

    obs_e, act_e, demo_tasks = load_sft_data(args)  # the training tasks' demos
    vocab = sorted({w for t in args.train_tasks for w in task_words(t)})
    model = VLA(vocab, obs_e.shape[1], act_e.shape[1], args, obs_e.mean(0), obs_e.std(0) + 1e-3)
    demos = {"obs": torch.as_tensor(obs_e), "act": torch.as_tensor(act_e),
             "words": torch.stack([model.tokens(t) for t in demo_tasks])}
    print(f"SFT data: {len(act_e)} transitions, {args.num_demo_episodes} episodes from each of "
          f"{len(args.train_tasks)} tasks; vocabulary {vocab}")
    log = Logger(run_name, args)
    splits = {"train": args.train_tasks, "heldout": args.heldout_tasks}
    results = []  # (iteration, success per split, success per task)

    # ---- SFT: Gaussian NLL of the base weights and head; LoRA stays zero ----
    opt = torch.optim.Adam(model.base_params(), lr=args.sft_lr)
    for step in log.steps(tqdm(range(args.sft_steps), desc="SFT", leave=False)):  # stops on SIGINT/SIGTERM (Logger)
        idx = torch.as_tensor(rng.integers(0, len(act_e), args.batch_size))
        loss = sft_loss(model, demos["obs"][idx], demos["words"][idx], demos["act"][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 250 == 0 or step == args.sft_steps - 1:
            log.log(step, **{"losses/sft_nll": loss.item(), "charts/std": model.log_std.exp().mean().item()})
    evaluate_splits(0, model, splits, args, log, results)

    # ---- iterative TPO ----
    M = args.samples_per_state  # M envs per task, built with one seed (one MT1 task list), run in lockstep
    envs = [] if log.interrupted else [make_env(f"metaworld/{t}", args.seed + 100 * i, args.max_episode_steps)()
                                       for i, t in enumerate(args.train_tasks) for _ in range(M)]
    tasks = [t for t in args.train_tasks for _ in range(M)]
    epochs_done = 0  # TPO epochs over all iterations: the x-axis of the TPO losses
    for it in log.steps(tqdm(range(1, args.num_iterations + 1), desc="GRAPE iterations")):
        # as one run of finetune.py: pi_ref = this iteration's starting policy, frozen, and a fresh AdamW
        ref = copy.deepcopy(model).requires_grad_(False)
        tpo_opt = torch.optim.AdamW(model.tpo_param_groups(args.tpo_weight_decay), lr=args.tpo_lr)
        trajs = sample_groups(model, envs, tasks, M, args.num_init_states, args.max_episode_steps, rng)
        # score (GCPG) and pair top-m with bottom-m within each group
        r_ext = [external_reward(*stage_costs(tr["obs"], tr["task"], args.stage_tolerance), args.beta_ext,
                                 args.cost_threshold) for tr in trajs]
        scores = [gcpg_reward(self_reward(tr["logp"]), re, tr["success"], args.lambda_self, args.lambda_ext,
                              args.lambda_success) for tr, re in zip(trajs, r_ext)]
        pairs = pair_groups(scores, M, args.num_pairs)
        log.log(it, **{"charts/sample_success": float(np.mean([tr["success"] for tr in trajs])),
                       "charts/r_ext": float(np.mean(r_ext)), "charts/gcpg": float(np.mean(scores)),
                       "charts/pairs": len(pairs),
                       "charts/pairs_success_vs_failure": sum(trajs[w]["success"] > trajs[lo]["success"]
                                                              for w, lo in pairs)})
        # TPO: pi_ref's log-probs once per rollout, then epochs of one optimiser step per window
        with torch.no_grad():
            ref_logp = {i: step_log_probs(ref, trajs[i]) for pr in pairs for i in pr}
        windows = tpo_windows(trajs, pairs, args.tpo_window, rng)
        for _ in log.steps(range(args.tpo_epochs if pairs else 0)):
            losses, margins = tpo_epoch(model, tpo_opt, trajs, pairs, windows, ref_logp, args.beta)
            epochs_done += 1
            log.log(epochs_done, **{"losses/tpo": float(np.mean(losses)), "charts/margin": float(np.mean(margins)),
                                    "charts/std": model.log_std.exp().mean().item()})
        if pairs:
            log.log(it, **{"charts/mean_shift_from_ref": mean_shift(model, ref, trajs, pairs)})
        evaluate_splits(it, model, splits, args, log, results)

    for env in envs:
        env.close()
    return log.finish({"model": model.state_dict(), "vocab": vocab, "results": results})


# ---- data, evaluation and a diagnostic, out of main()'s way ----
def load_sft_data(args):
    """Observations, actions and each row's task of the first --num-demo-episodes demos of each training task."""
    data_dir, n = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"), args.num_demo_episodes
    obs_l, act_l, demo_tasks = [], [], []
    for t in args.train_tasks:
        d = load_demos(os.path.join(data_dir, f"metaworld-{t}.npz"), make_env(f"metaworld/{t}", args.seed)())
        ends = np.flatnonzero(d["terminations"] + d["truncations"])
        if n > len(ends):
            raise SystemExit(f"--num-demo-episodes {n} is more than the {len(ends)} episodes in the demo file: pass "
                             f"at most {len(ends)}.")
        obs_l.append(d["observations"][: ends[n - 1] + 1])
        act_l.append(d["actions"][: ends[n - 1] + 1])
        demo_tasks += [t] * (ends[n - 1] + 1)
    return np.concatenate(obs_l), np.concatenate(act_l), demo_tasks


def evaluate_splits(it, model, splits, args, log, results):
    """Deterministic success rate per task and per split (train, held-out): logged at step `it`, printed, kept."""
    if log.interrupted:  # SIGINT/SIGTERM: straight to saving the model
        return
    per_task = {t: evaluate(lambda obs: model.act(obs, t), f"metaworld/{t}", args.eval_episodes, 10_000 + args.seed)[1]
                for ts in splits.values() for t in ts}
    row = {s: float(np.mean([per_task[t] for t in ts])) for s, ts in splits.items()}
    log.log(it, **{f"eval/success_{s}": v for s, v in row.items()},
            **{f"eval/success/{t}": v for t, v in per_task.items()})
    results.append((it, row, per_task))
    print(f"iteration {it}: success train {row['train']:.2f}, held-out {row['heldout']:.2f} ("
          + ", ".join(f"{t} {v:.1f}" for t, v in per_task.items()) + ")")


def mean_shift(model, ref, trajs, pairs):
    """How far the deterministic policy has moved from pi_ref: mean |mean action - pi_ref's| on the paired rollouts."""
    with torch.no_grad():
        o = torch.as_tensor(np.concatenate([trajs[i]["obs"] for pr in pairs for i in pr]))
        words = torch.cat([model.tokens(trajs[i]["task"])[None].expand(len(trajs[i]["obs"]), -1)
                           for pr in pairs for i in pr])
        return (model.dist(o, words).mean - ref.dist(o, words).mean).abs().mean().item()


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


# Fidelity to the official code (paper: arXiv 2411.19309; official code: aiming-lab/GRAPE, read at 89986c7)
# | design choice | official (source) | this file | why different |
# |---|---|---|---|
# | policy | OpenVLA-7B, 7 action tokens per step, LoRA r 32, alpha 32 (TPO-Train/finetune.py) | 2-layer Transformer
#   d 64 over instruction words + 4 state tokens, Gaussian head with a learned std, LoRA r 8 alpha 16 on every
#   linear layer | CPU budget; continuous actions need a density, so log pi is a Gaussian log-density |
# | SFT | OpenVLA fine-tuned on demos (token cross-entropy) | Gaussian NLL of the base weights and head on the first
#   --num-demo-episodes demos per task; LoRA zero | an NLL like the tokens' one, which also learns the std that
#   sampling uses; few demos so the start is below 100% |
# | pi_ref | model and reference loaded from one --vla_path (finetune.py): the run's starting policy, frozen | a frozen
#   copy of the policy at each iteration's start; LoRA adapters carry over (official: how a run's adapters become
#   the next --vla_path is not in the code) | - |
# | TPO loss | -log sigmoid(beta * margin), beta 0.1, no SFT term, no label smoothing (finetune.py) | same | - |
# | what a "trajectory" is in the loss | paper: the whole trajectory; official code: every stride-1 window of 8 steps,
#   chosen and rejected paired by index (finetune.py window_batch); the longer of a pair truncated to the shorter
#   (maintainer, aiming-lab/GRAPE issue #6) | whole trajectories truncated to the shorter of the pair (--tpo-window
#   0); --tpo-window 8 gives the code's windows, 1 step-wise DPO | the paper's definition by default |
# | optimiser | AdamW (weight decay 0.01, torch's default), lr 2e-5, fresh per run, one step per 8-step window, all
#   pairs' windows flattened and shuffled once, 10 epochs (finetune.py flatshape) | the same per iteration, lr 1e-4,
#   no decay on log_std | a small model from a CPU-trained start takes a larger step; decay would pull std to 1 |
# | R_self | 0.01 log prod_t max(p_t, 0.05), p_t the 7 tokens' probability (maniskill2_evaluator.py) | 0.01 sum_t
#   log max(p_t, 0.05), p_t the raw action's Gaussian density capped at 1 | a density can exceed 1; capped, every
#   term is <= 0 (a length penalty) as official; the official product underflows to 0 after ~250 steps (then it
#   scores R_ext + 5 I_success - 1), a sum of logs does not |
# | R_ext | prod over 3 stages exp(-sum_c 0.01 max(0, C_c - thr_c)), C_c a per-step cost (distance, grasp, collision
#   checks) summed over the stage's steps, VLM keypoints (maniskill2_evaluator.py external_score_option2, cal_cost) |
#   the product with beta_ext 0.001, thr 0, C_i the stage's distance (cm) summed over its steps, a stage ending
#   within 3 cm; NOT official: (stages done + product) / (stages + 1) | no VLM: stages written per task in STAGES;
#   distances only, so a stage never reached costs nothing: without the count, stuck rollouts could rank higher |
# | I_success weight | lambda_3 5 (maniskill2_evaluator.py) | 5 | - |
# | pairs | paper: top-m with bottom-m of a task's ranked rollouts, from the same initial state (quoted in
#   aiming-lab/GRAPE issue #22); code: ranking by hand, 6-11 rollouts per initial state until one succeeds and one
#   fails | top-m with bottom-m within each group of M rollouts from one initial state, m 1, ties skipped | - |
# | sampling | do_sample, HF defaults (temperature 1) | the Gaussian with its learned std | - |
# | K, M, m | not in the code; the paper's values not checked here | K 3, M 4, m 1, 4 initial states per task | CPU |
# | tasks | Simpler-Env, LIBERO, real robot; unseen objects, positions, instructions | MetaWorld v3: 4 training tasks
#   where SFT from 10 demos stays below 100%, 3 held-out ones (a wall in the way, an unknown word in the instruction);
#   evaluation on unseen goal positions | state-based tasks that install here |


if __name__ == "__main__":
    sys.exit(main())

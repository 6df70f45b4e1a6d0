"""What the Stage I critic hands to Stage II: for each Stage I checkpoint (a model.pt of `conrft.py --online-steps 0`,
--algo conrft), on the run's own demo transitions (conrft.py's first_episodes + demo_rows on the run's demo file and
--num-demos: its task reward, masks, discount and Monte-Carlo returns), four measures:

1. grad_ratio: at the start of Stage II, with Stage II's weights (the checkpoint's --eta and --beta; 1 and 0.1 by
   default), ||d/dpsi of eta * (-E[Q(s, a~pi)])|| / ||d/dpsi of beta * L_c|| over the policy's parameters, per batch of
   the run's batch size of demo transitions (--batches of them; mean over batches, with grad_norm_q and grad_norm_bc).
   The two terms are conrft.policy_loss called with (eta, beta 0) and with (eta 0, beta); Q is the ensemble mean there.
2. q_demo_mean, q_demo_min: Q(s, a) of the demo actions, the critic's ensemble mean (what the policy loss ascends) and
   its min (how td_loss reduces the ensemble; q_target_demo_min: the same min on the target critic, the network Stage
   II's first TD targets use); mc_return: the demo's discounted Monte-Carlo return from that state (V^mu, conrft's
   mc_returns); q_below_mc_mean / q_below_mc_min: the share of demo states where that Q is below the MC return.
3. ascent_share: from each demo action, --ascent-steps projected steps a <- clip(a + lr g / ||g||, -1, 1),
   g = d/da of the ensemble-mean Q, step length --ascent-lr; the share of demo states where an action on the way has
   Q at least 0.5 above the demo action's; ascent_gain: the mean of (best Q on the way - Q of the demo action).
4. frozen_eta1/*, frozen_eta0/*: Stage II from the checkpoint with the critic and its target frozen (no critic
   update, no Polyak step; conrft.py has no flag for it, so the loop is here, built from conrft's functions), once
   with eta 1 and once with eta 0 (--etas: any list), beta as Stage II's (0.1), for --frozen-steps env steps; at step
   0 and every --eval-every: success (conrft's evaluate, --eval-episodes episodes, env seeds 10000 + seed, noise as
   the run's --eval-noise), action_mse (the policy's action vs the demo action on every demo state, mean over dims) and
   q_policy (ensemble-mean Q of those actions). The loop mirrors main()'s Stage II: the training env with the run's
   --episode-steps, fresh Adam on the policy, the demo buffer and an online buffer of the same capacities,
   step_decision / task_reward / store_episode, learning after the first episode, one learner step per env step in
   which cta_ratio mixed batches (half demo, half online) are drawn as main() does for its critic updates and the
   actor updates once on the last, policy_loss with (eta, beta) and beta fading if the run had --beta-fade.
   Interventions are off (the Stage I checkpoints of run.sh have none; run.sh's Stage II runs had random takeovers,
   --intervene-prob 0.02; this script's --intervene-prob turns them on).
   Otherwise different from main(): no critic step, so torch's random draws (next actions of the TD targets) and
   hence the run's random stream differ from a real Stage II's; no --compile; online episodes are not logged.

Writes critic_probe.csv (long format: label, offline_steps, measure, step, value; measures 1-3 at step 0, rewritten
after each checkpoint) and prints markdown tables. Labels: LABEL=PATH on the command line, else s<seed>_off<steps>.
Cost on one thread (2-core machine beside two other jobs): measures 1-3 a few seconds; the frozen-critic runs about
2 min per eta at the defaults (one actor step at batch 256 about 10 ms, evaluation episodes up to 500 steps).
run_probe.sh makes the checkpoints and runs this on them.

    python benchmarks/conrft/critic_probe.py 4k_s1=benchmarks/conrft/stage_one/runs/<run>/model.pt [more ...]
    python benchmarks/conrft/critic_probe.py <model.pt> --frozen-steps 1000 --eval-episodes 2   # a quick look
"""
import argparse
import csv
import dataclasses
import os
import random
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
import conrft as C  # noqa: E402


def load(path):
    """The checkpoint's Args, networks (critic and target frozen) and noise levels, refusing what is not Stage I."""
    ckpt = torch.load(path, weights_only=False)
    fields = {f.name for f in dataclasses.fields(C.Args)}
    args = C.Args(**{k: v for k, v in ckpt["args"].items() if k in fields})
    if args.algo != "conrft" or args.online_steps != 0 or ckpt.get("interrupted") or args.stage_one:
        raise SystemExit(f"{path}: not a finished Stage I checkpoint of conrft.py --algo conrft --online-steps 0.")
    env = C.make_env(args.env_id, args.seed, args.episode_steps or None)()
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    policy = C.ConsistencyPolicy(obs_dim, act_dim, args.hidden, args.sigma_min, args.sigma_max, args.sigma_data,
                                 embed=args.state_embed)
    policy.load_state_dict(ckpt["policy"])
    nets = {}
    for key in ("critic", "target_critic"):
        nets[key] = C.CriticEnsemble(obs_dim, act_dim, args.num_qs, args.hidden, args.state_embed)
        nets[key].load_state_dict(ckpt[key])
        nets[key].requires_grad_(False)
    return args, env, policy, nets["critic"], nets["target_critic"], ckpt["sigmas"]


def demo_data(args, env):
    """The run's demo transitions, as main() builds them."""
    sparse, task = args.env_id.startswith("metaworld/"), args.env_id.split("/", 1)[-1]
    demo_name = f"metaworld-{task}.npz" if sparse else f"{args.env_id}-medium.npz"
    demos, _ = C.first_episodes(C.load_demos(args.demo_path or os.path.join(ROOT, "data", demo_name), env),
                                args.num_demos, only_success=sparse)
    return C.demo_rows(demos, sparse, args), sparse


def grad_norm(loss, params):
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return float(torch.sqrt(sum((g**2).sum() for g in grads if g is not None)))


def static_measures(args, policy, critic, target, sigmas, demos, opts):
    """Measures 1-3 at the start of Stage II: {measure: value}."""
    rng, out = np.random.default_rng(args.seed), {}
    buf = C.Buffer(demos["observations"].shape[1], demos["actions"].shape[1], len(demos["rewards"]))
    buf.add_many(demos)
    beta = args.beta_offline if args.beta_fade else args.beta  # Stage II's beta at its first update, as main()
    params, ratios, nq, nbc = list(policy.parameters()), [], [], []
    for _ in range(opts.batches):
        b = buf.sample(args.batch_size, rng)
        l_q = C.policy_loss(policy, critic, b["observations"], b["actions"], sigmas, args, 0.0, args.eta)[0]
        l_bc = C.policy_loss(policy, critic, b["observations"], b["actions"], sigmas, args, beta, 0.0)[0]
        nq.append(grad_norm(l_q, params))
        nbc.append(grad_norm(l_bc, params))
        ratios.append(nq[-1] / nbc[-1])
    out |= {"grad_ratio": np.mean(ratios), "grad_ratio_sd": np.std(ratios), "grad_norm_q": np.mean(nq),
            "grad_norm_bc": np.mean(nbc)}

    obs, act = torch.as_tensor(demos["observations"]), torch.as_tensor(demos["actions"])
    mc = torch.as_tensor(demos["mc_returns"])
    with torch.no_grad():
        q = critic(obs, act).squeeze(-1)  # (E, N)
        q_mean, q_min = q.mean(0), q.min(0).values
        q_target_min = target(obs, act).squeeze(-1).min(0).values
    out |= {"q_demo_mean": q_mean.mean(), "q_demo_min": q_min.mean(), "q_target_demo_min": q_target_min.mean(),
            "mc_return": mc.mean(), "q_below_mc_mean": (q_mean < mc).float().mean(),
            "q_below_mc_min": (q_min < mc).float().mean()}

    a, best = act.clone(), q_mean.clone()
    for _ in range(opts.ascent_steps):
        a.requires_grad_(True)
        g = torch.autograd.grad(critic(obs, a).mean(0).sum(), a)[0]
        a = (a.detach() + opts.ascent_lr * g / (g.norm(dim=-1, keepdim=True) + 1e-8)).clamp(-1, 1)
        with torch.no_grad():
            best = torch.maximum(best, critic(obs, a).mean(0).squeeze(-1))
    gain = best - q_mean
    out |= {"ascent_share": (gain >= 0.5).float().mean(), "ascent_gain": gain.mean()}
    return {k: float(v) for k, v in out.items()}


def frozen_stage_two(path, eta, demos, sparse, opts):
    """Measure 4: main()'s Stage II from the checkpoint with eta, the critic and target frozen; [(step, measure, v)]."""
    args, env, policy, critic, _, sigmas = load(path)  # fresh networks for each variant
    if opts.intervene_prob:
        args.intervene_prob = opts.intervene_prob
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    obs_dim, act_dim = demos["observations"].shape[1], demos["actions"].shape[1]
    demo_buf = C.Buffer(obs_dim, act_dim, len(demos["rewards"]) + opts.frozen_steps)
    demo_buf.add_many(demos)
    online_buf = C.Buffer(obs_dim, act_dim, max(opts.frozen_steps, 1))
    expert = C.make_expert(args.env_id, os.path.join(ROOT, "data")) if args.intervene_prob else None
    beta = args.beta_offline if args.beta_fade else args.beta
    actor_opt = torch.optim.Adam(policy.parameters(), lr=args.lr)  # fresh, as main() at the switch
    demo_obs, demo_act = torch.as_tensor(demos["observations"]), torch.as_tensor(demos["actions"])

    def act(o, noise=True):
        with torch.no_grad():
            return policy.sample(torch.as_tensor(o, dtype=torch.float32)[None], sigmas, args.num_sample_steps,
                                 noise=noise)[0].numpy()

    def measure(step):
        _, succ = C.evaluate(lambda o: act(o, args.eval_noise), args.env_id, opts.eval_episodes, 10_000 + args.seed,
                             args.episode_steps or None)  # as conrft.py's main(): --episode-steps caps evaluation too
        with torch.no_grad():
            pa = policy.sample(demo_obs, sigmas, args.num_sample_steps, noise=args.eval_noise)
            q = critic(demo_obs, pa).mean(0)
        tag = f"frozen_eta{eta:g}/"
        print(f"  {tag} step {step}: success {succ:.2f}, action_mse {float(((pa - demo_act) ** 2).mean()):.4f}",
              file=sys.stderr, flush=True)
        return [(step, tag + "success", succ), (step, tag + "action_mse", float(((pa - demo_act) ** 2).mean())),
                (step, tag + "q_policy", float(q.mean()))]

    rows, episode, takeover_left = measure(0), [], 0
    obs, _ = env.reset(seed=args.seed)
    for step in range(opts.frozen_steps):
        action, by_expert, takeover_left = C.step_decision(obs, len(episode), act, expert, takeover_left, rng, args)
        next_obs, reward, term, trunc, info = env.step(action)
        r = float(C.task_reward(info.get("success", 0.0), reward, sparse, args.success_reward, args.step_penalty))
        done = term or (trunc and args.episode_steps > 0)
        episode.append((obs, action, r, next_obs, 1.0 - float(done), by_expert))
        obs = next_obs
        if term or trunc:
            C.store_episode(episode, online_buf, demo_buf, args.gamma)
            episode, takeover_left = [], 0
            obs, _ = env.reset()
        if online_buf.size > 0:  # learning starts after the first episode
            for _ in range(args.cta_ratio):  # main() draws one batch per critic update; the actor gets the last
                b = C.mixed_batch(demo_buf, online_buf, args.batch_size, rng)
            loss = C.policy_loss(policy, critic, b["observations"], b["actions"], sigmas, args, beta, eta)[0]
            C.gradient_step(actor_opt, loss)
            if args.beta_fade:
                beta = max(args.beta_min, beta - args.beta_decay)
        if (step + 1) % opts.eval_every == 0 or step + 1 == opts.frozen_steps:
            rows += measure(step + 1)
    env.close()
    return rows


def tables(rows):
    """Markdown: one row per checkpoint for measures 1-3 and the frozen runs' ends; one per frozen run and step."""
    by = {}
    for r in rows:
        by.setdefault((r["label"], r["offline_steps"]), {})[(r["measure"], r["step"])] = r["value"]
    cols = [("grad ratio Q/BC", "grad_ratio"), ("Q demo (mean)", "q_demo_mean"), ("Q demo (min)", "q_demo_min"),
            ("MC return", "mc_return"), ("Q<MC (mean)", "q_below_mc_mean"), ("Q<MC (min)", "q_below_mc_min"),
            ("ascent share", "ascent_share"), ("ascent gain", "ascent_gain")]
    print("| checkpoint | offline steps | " + " | ".join(c for c, _ in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for (label, off), m in by.items():
        print(f"| {label} | {off} | " + " | ".join(f"{m.get((k, 0), np.nan):.3f}" for _, k in cols) + " |")
    steps = sorted({s for m in by.values() for (k, s) in m if k.startswith("frozen")})
    if steps:
        print("\nFrozen-critic Stage II, success / action MSE to the demos:\n")
        print("| checkpoint | eta | " + " | ".join(str(s) for s in steps) + " |")
        print("|---|---|" + "---|" * len(steps))
        for (label, _), m in by.items():
            for tag in sorted({k.split("/")[0] for (k, _) in m if k.startswith("frozen")}, reverse=True):
                cells = [f"{m[(tag + '/success', s)]:.2f} / {m[(tag + '/action_mse', s)]:.3f}"
                         if (tag + "/success", s) in m else "" for s in steps]
                print(f"| {label} | {tag[len('frozen_eta'):]} | " + " | ".join(cells) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="Stage I model.pt files, each optionally as LABEL=PATH")
    ap.add_argument("--batches", type=int, default=8, help="demo batches for the gradient ratio")
    ap.add_argument("--ascent-steps", type=int, default=10)
    ap.add_argument("--ascent-lr", type=float, default=0.1, help="L2 length of each ascent step in action space")
    ap.add_argument("--frozen-steps", type=int, default=5000, help="env steps of each frozen-critic Stage II (0: none)")
    ap.add_argument("--etas", type=float, nargs="+", default=[1.0, 0.0], help="frozen Stage II: one run per eta")
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--eval-episodes", type=int, default=5)
    ap.add_argument("--intervene-prob", type=float, default=0.0, help="frozen Stage II: random takeovers (0: off)")
    ap.add_argument("--out", default=os.path.join(HERE, "critic_probe.csv"))
    opts = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for spec in opts.checkpoints:
        label, _, path = spec.partition("=") if "=" in spec else ("", "", spec)
        args, env, policy, critic, target, sigmas = load(path)
        label = label or f"s{args.seed}_off{args.offline_steps}"
        print(f"{label}: {path}", file=sys.stderr, flush=True)
        torch.manual_seed(args.seed)
        demos, sparse = demo_data(args, env)
        row = lambda step, measure, v: {"label": label, "offline_steps": args.offline_steps,  # noqa: E731
                                        "measure": measure, "step": step, "value": v}
        rows += [row(0, k, v) for k, v in static_measures(args, policy, critic, target, sigmas, demos, opts).items()]
        if opts.frozen_steps:
            for eta in opts.etas:
                rows += [row(*r) for r in frozen_stage_two(path, eta, demos, sparse, opts)]
        with open(opts.out, "w", newline="") as f:  # rewritten after each checkpoint
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    tables(rows)
    print(f"\nwritten: {os.path.relpath(opts.out)}")


if __name__ == "__main__":
    main()

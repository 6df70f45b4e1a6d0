"""Why does RLIF's learner not pass the intervener? Probes the 200k-step RLIF checkpoints (run_200k.sh: Hopper-v4,
medium intervener, Q_ref and a_ref from the expert). Each policy acts ALONE for --episodes episodes (env seeds
--env-seed, +1, ...; <= 1000 steps); at every state s it visits we evaluate the checkpoint's rule, critic and Q_ref.
Policies: learner-det (deterministic, as in evaluation), learner-sampled (as in training), medium (the intervener),
expert (a_ref): data/Hopper-v4-{medium,expert}-policy.npz. a: the acting policy's action; a_med, a_ref: theirs at s.
    return, length, xvel  mean episode return, length, forward velocity (info x_velocity) of the policy alone
    fire          share of its states where the rule fires, Q_ref(s, a) < alpha Q_ref(s, a_ref) (before the beta coin:
                  rlif.should_intervene with beta 1; alpha from the checkpoint, 0.99)
    fire_med      the same with a_med in place of a at the same states: would the intervener be flagged there?
    share_pred    expert share of env steps were this policy the learner: a checked step starts a takeover with
                  p = beta fire + (1 - beta)(1 - fire), T expert steps + 1 unchecked: T p / (1 + T p) (0.167 at fire 0)
    coin_share    share of those takeovers from the (1 - beta) coin, not the rule: (1 - beta)(1 - fire) / p
    share_train   (learner-sampled) the run's measured expert share over its last 20k env steps (metrics.csv)
    qref_ratio, qref_gap, qref_ref  median Q_ref(s, a) / Q_ref(s, a_ref) (the mean blows up near falls, Q_ref -> 0);
                  mean Q_ref(s, a) - Q_ref(s, a_ref) (return units; the rule's margin is 1%); mean Q_ref(s, a_ref)
    corr_fire_rew, corr_fire_xvel; rew_fire, rew_nofire  Pearson correlation of fire (0/1) with the step's reward /
                  forward velocity; mean reward of the steps where the rule fires / does not
    Q{mean,min}_{own,med,ref}_{fire,nofire}  the learner's critic (ensemble mean / min) of a, a_med, a_ref at fire /
                  no-fire states; pref_ref_fire, pref_med_fire: share of fire states where Qmean(s, a_ref) (resp.
                  a_med) > Qmean(s, a)
Writes OUT.csv (seed, policy, measure, value) and OUT.md (default benchmarks/rlif/probe_200k.*); prints the tables.
    OMP_NUM_THREADS=1 python benchmarks/rlif/probe_200k.py [--runs-dir DIR]   (every RLIF run in DIR with a model.pt)
    OMP_NUM_THREADS=1 python benchmarks/rlif/probe_200k.py RUN_DIR/model.pt ... --episodes 5
"""
import argparse
import csv
import glob
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
import rlif as R  # noqa: E402


def load(path, env):
    """The checkpoint's actor, critic and Q_ref, built as rlif.main() builds them."""
    ck = torch.load(path, weights_only=False)
    a, obs_dim, act_dim = R.Args(**ck["args"]), env.observation_space.shape[0], env.action_space.shape[0]
    actor = R.Actor(obs_dim, act_dim, a.hidden, env.action_space.low, env.action_space.high, a.num_layers)
    critic = R.CriticEnsemble(obs_dim, act_dim, a.num_qs, a.hidden, a.critic_layer_norm, a.num_layers)
    qref = R.QRef(np.zeros(obs_dim), np.ones(obs_dim), act_dim)
    for net, key in ((actor, "actor"), (critic, "critic"), (qref, "qref")):
        net.load_state_dict(ck[key])
        net.eval()
    return a, actor, critic, qref


def rollouts(act, env, episodes, seed):
    """The policy alone: states, its actions, rewards, forward velocities (concatenated) and episode returns/lengths."""
    S, A, rew, xv, rets, lens = [], [], [], [], [], []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, ret, n = False, 0.0, 0
        while not done:
            a = act(obs)
            S.append(obs), A.append(a)
            obs, r, term, trunc, info = env.step(a)
            rew.append(r), xv.append(info.get("x_velocity", np.nan))
            ret, n, done = ret + float(r), n + 1, term or trunc
        rets.append(ret), lens.append(n)
    t = lambda x: torch.as_tensor(np.array(x), dtype=torch.float32)
    return t(S), t(A), np.array(rew), np.array(xv), rets, lens


def corr(x, y):
    return float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else np.nan


def at(x, mask):
    return float(np.mean(x[mask])) if mask.any() else np.nan


@torch.no_grad()
def probe(path, episodes, env_seed):
    env = R.make_env("Hopper-v4", env_seed, max_episode_steps=1000)()
    a, actor, critic, qref = load(path, env)
    prefix = os.path.join(ROOT, "data", a.env_id.replace("/", "-"))
    medium, expert = (R.load_policy(f"{prefix}-{lvl}-policy.npz") for lvl in (a.expert_level, "expert"))
    learner = lambda det: lambda o: actor(torch.as_tensor(o, dtype=torch.float32)[None], det)[0][0].numpy()
    torch.manual_seed(a.seed)
    with open(os.path.join(os.path.dirname(path), "metrics.csv")) as f:  # expert share of the last 20k training steps
        share = [(int(r[0]), float(r[2])) for r in csv.reader(f) if r[1] == "charts/intervention_rate"]
    train_share = np.mean([v for s, v in share if s > a.total_timesteps - 20_000])
    pols = {"learner-det": learner(True), "learner-sampled": learner(False), "medium": medium, "expert": expert}
    out = {}
    for name, act in pols.items():
        S, A, rew, xv, rets, lens = rollouts(act, env, episodes, env_seed)
        a_med, a_ref = (torch.as_tensor(np.stack([p(s) for s in S.numpy()])) for p in (medium, expert))
        q_a, q_med, q_ref = qref(S, A), qref(S, a_med), qref(S, a_ref)
        rule = lambda q: np.array([R.should_intervene(x, y, a.intervene_alpha, 1.0, 0.5)
                                   for x, y in zip(q.tolist(), q_ref.tolist())])  # beta 1, u 0.5: the condition alone
        fire, fire_med = rule(q_a), rule(q_med)
        f, b, T = fire.mean(), a.intervene_beta, a.takeover_steps
        p = b * f + (1 - b) * (1 - f)  # P(a checked learner step starts a takeover)
        m = {"return": np.mean(rets), "length": np.mean(lens), "xvel": xv.mean(), "fire": f,
             "fire_med": fire_med.mean(), "share_pred": T * p / (1 + T * p), "coin_share": (1 - b) * (1 - f) / p,
             "share_train": train_share if name == "learner-sampled" else np.nan,
             "qref_ratio": (q_a / q_ref).median().item(), "qref_gap": (q_a - q_ref).mean().item(),
             "qref_ref": q_ref.mean().item(), "corr_fire_rew": corr(fire, rew), "corr_fire_xvel": corr(fire, xv),
             "rew_fire": at(rew, fire), "rew_nofire": at(rew, ~fire)}
        Q = {k: critic(S, x).squeeze(-1).numpy() for k, x in (("own", A), ("med", a_med), ("ref", a_ref))}  # (E, N)
        for k, q in Q.items():
            for where, mask in (("fire", fire), ("nofire", ~fire)):
                m[f"Qmean_{k}_{where}"], m[f"Qmin_{k}_{where}"] = at(q.mean(0), mask), at(q.min(0), mask)
            if k != "own":
                m[f"pref_{k}_fire"] = at(q.mean(0) > Q["own"].mean(0), fire)
        out[name] = {k: float(v) for k, v in m.items()}
        print(f"  {name}: return {m['return']:.0f}, fire {m['fire']:.3f}", flush=True)
    return a.seed, out


def table(rows, measures, policies, fmt):
    head = "| seed | policy | " + " | ".join(measures) + " |\n|" + "---|" * (len(measures) + 2) + "\n"
    seeds = sorted({s for s, *_ in rows})
    get = {(s, p, k): v for s, p, k, v in rows}
    lines = [f"| {s} | {p} | " + " | ".join(fmt(get[(s, p, k)]) for k in measures) + " |"
             for p in policies for s in seeds]
    means = [f"| mean | {p} | " + " | ".join(fmt(np.mean([get[(s, p, k)] for s in seeds])) for k in measures) + " |"
             for p in policies]
    return head + "\n".join(lines + means) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*", help="model.pt files (default: every RLIF run in --runs-dir with one)")
    ap.add_argument("--runs-dir", default=os.path.join(HERE, "long200k", "runs"))
    ap.add_argument("--episodes", type=int, default=5)
    ap.add_argument("--env-seed", type=int, default=10_000, help="first episode's env seed (the runs' eval: 10_000+)")
    ap.add_argument("--out", default=os.path.join(HERE, "probe_200k"), help="writes OUT.csv and OUT.md")
    args = ap.parse_args()
    models = args.models or sorted(glob.glob(os.path.join(args.runs_dir, "*__rlif-*", "model.pt")))
    rows = []
    for path in models:
        print(path, flush=True)
        seed, out = probe(path, args.episodes, args.env_seed)
        rows += [(seed, p, k, v) for p, m in out.items() for k, v in m.items()]
    with open(f"{args.out}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seed", "policy", "measure", "value"])
        w.writerows((s, p, k, f"{v:.6g}") for s, p, k, v in rows)
    pols = ("learner-det", "learner-sampled", "medium", "expert")
    f2 = lambda v: f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.3f}"
    md = (f"RLIF 200k checkpoints, each policy alone, {args.episodes} episodes (env seeds {args.env_seed}+), Hopper-v4"
          f" (benchmarks/rlif/probe_200k.py); runs: {', '.join(os.path.basename(os.path.dirname(x)) for x in models)}"
          "\n\n"
          + table(rows, ["return", "length", "xvel", "fire", "fire_med", "share_pred", "share_train", "coin_share",
                         "qref_ratio", "qref_gap", "corr_fire_rew", "rew_fire", "rew_nofire"], pols, f2)
          + "\nThe learner's critic (ensemble mean) of the acting policy's action (own), the medium's and the expert's"
            " at the states where the rule fires / does not; pref_*: share of fire states where the critic ranks"
            " that action above the own one (min over the ensemble: csv)\n\n"
          + table(rows, [f"Qmean_{k}_{w}" for w in ("fire", "nofire") for k in ("own", "med", "ref")]
                  + ["pref_ref_fire", "pref_med_fire"], pols, lambda v: f"{v:.2f}"))
    open(f"{args.out}.md", "w").write(md)
    print(md)


if __name__ == "__main__":
    main()

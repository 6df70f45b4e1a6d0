"""Mutation check of the fidelity tables: each mutant breaks one row (or one equation of a docstring's map) in a copy
of the repository, and the tests it names must fail there.

    python tools/mutants.py               # every mutant: killed / survived, exit 1 on a survivor or a stale mutant
    python tools/mutants.py --list        # the table: file, name, the row it breaks, its tests
    python tools/mutants.py rlpd rlif     # only the mutants of files whose name contains one of these words
    python tools/mutants.py --jobs 1      # one at a time (default: 2 copies of the repository side by side)

The heavy imports (torch, gymnasium, pytest) are loaded once; each mutant's tests run in a forked child.

A mutant replaces `old` (which must occur exactly once in its file, else the table is stale and the run fails) by
`new`, runs only its `tests` (pytest node ids), and is killed when they fail. Each section below belongs to one
method file; add a mutant whenever a fidelity row or an equation gains a test.
"""
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import NamedTuple

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: each forked test run uses one thread
os.environ.setdefault("TEST_THREADS", "1")  # (tests/conftest.py reads it)
import gymnasium  # noqa: E402,F401  (the heavy imports, loaded once and shared by every forked test run)
import numpy  # noqa: E402,F401
import pytest  # noqa: E402
import torch  # noqa: E402,F401
import tyro  # noqa: E402,F401
from torch.utils.tensorboard import SummaryWriter  # noqa: E402,F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Mutant(NamedTuple):
    file: str  # the method file it changes
    name: str  # short, unique within the file
    row: str  # the fidelity row or equation it breaks
    old: str  # exact text, found exactly once in the file
    new: str  # its replacement
    tests: tuple  # pytest node ids that must fail


M = Mutant

# ---- rlpd.py ----
_T = "tests/test_rlpd.py::"
RLPD = [
    M("rlpd.py", "critic-no-layernorm", "critic layer: Dense -> LayerNorm -> ReLU (CriticEnsemble)",
      "norm = (lambda: EnsembleLayerNorm(num_qs, hidden)) if layer_norm else nn.Identity", "norm = nn.Identity",
      (_T + "test_critic_layer_norm_comes_before_each_relu",)),
    M("rlpd.py", "critic-layernorm-after-relu", "critic layer: LayerNorm before the ReLU, not after",
      "norm(), nn.ReLU(),\n                                 EnsembleLinear(num_qs, hidden, hidden), norm(), nn.ReLU(),",
      "nn.ReLU(), norm(),\n                                 EnsembleLinear(num_qs, hidden, hidden), nn.ReLU(), norm(),",
      (_T + "test_critic_layer_norm_comes_before_each_relu",)),
    M("rlpd.py", "target-first-z-critics", "ensemble / subset: min over a random subset of Z (subset_min_target)",
      "idx = torch.randperm(q_next.shape[0], generator=generator)[:num_min_qs]",
      "idx = torch.arange(q_next.shape[0])[:num_min_qs]",
      (_T + "test_subset_min_target_draws_a_random_subset_without_replacement",)),
    M("rlpd.py", "online-truncation-masked", "masks: 1 - terminal; truncations bootstrap (what main() stores)",
      "buffer.add(obs, action, reward, next_obs, 1.0 - float(term))",
      "buffer.add(obs, action, reward, next_obs, 1.0 - float(term or trunc))",
      (_T + "test_main_stores_masks_from_terminations_only",)),
    M("rlpd.py", "backup-without-entropy", "entropy backup: y has - alpha log pi(a'|s') (td_target)",
      "v = q_next_min - alpha * next_logp if backup_entropy else q_next_min", "v = q_next_min",
      (_T + "test_td_target_subtracts_the_entropy_term",)),
    M("rlpd.py", "backup-entropy-sign", "entropy backup: the term is subtracted (td_target)",
      "v = q_next_min - alpha * next_logp if", "v = q_next_min + alpha * next_logp if",
      (_T + "test_td_target_subtracts_the_entropy_term",)),
    M("rlpd.py", "critic-loss-sum-over-critics", "critic loss: mean over critics and batch (critic_loss)",
      "return ((qs - target.unsqueeze(0)) ** 2).mean()", "return ((qs - target.unsqueeze(0)) ** 2).sum(0).mean()",
      (_T + "test_loss_values",)),
    M("rlpd.py", "actor-min-over-critics", "actor loss: mean over the ensemble of Q (actor_loss)",
      "(alpha * logp - qs_pi.mean(0)).mean()", "(alpha * logp - qs_pi.min(0).values).mean()",
      (_T + "test_loss_values",)),
    M("rlpd.py", "temperature-loss-on-log-alpha", "temperature: loss on alpha, not log alpha (temperature_loss)",
      "(log_alpha.exp() * (-logp.detach() - target_entropy)).mean()",
      "(log_alpha * (-logp.detach() - target_entropy)).mean()",
      (_T + "test_loss_values",)),
    M("rlpd.py", "critic-init-not-xavier", "initialisation: xavier_uniform kernels (EnsembleLinear)",
      "bound = np.sqrt(6 / (inp + out))", "bound = np.sqrt(1 / inp)",
      (_T + "test_official_init_xavier_kernels_and_zero_biases",)),
    M("rlpd.py", "actor-step-before-critic-steps", "update order: utd critic steps, then one actor step (main)",
      "            for i in range(args.utd):\n"
      "                c_loss, q_mean = critic_step({k: v[i] for k, v in batch.items()}, alpha)\n"
      "            b = {k: v[-1] for k, v in batch.items()}\n"
      "            a_loss, t_loss, logp_mean = actor_step(b[\"observations\"], alpha)\n",
      "            b = {k: v[-1] for k, v in batch.items()}\n"
      "            a_loss, t_loss, logp_mean = actor_step(b[\"observations\"], alpha)\n"
      "            for i in range(args.utd):\n"
      "                c_loss, q_mean = critic_step({k: v[i] for k, v in batch.items()}, alpha)\n",
      (_T + "test_main_runs_utd_critic_steps_then_one_actor_step_on_the_last_slice",)),
    M("rlpd.py", "offline-ratio-swapped", "batch / mixing: offline_ratio of every slice offline (sample_batch)",
      "n_off = int(round(offline_ratio * batch_size))", "n_off = int(round((1 - offline_ratio) * batch_size))",
      (_T + "test_symmetric_sampling_is_half_demos_in_every_slice",
       _T + "test_main_runs_utd_critic_steps_then_one_actor_step_on_the_last_slice")),
    M("rlpd.py", "polyak-before-critic-step", "Polyak: toward the critic after its step, every step (critic_update)",
      "    critic_opt.step()\n    with torch.no_grad():\n"
      "        torch._foreach_lerp_(target_params, critic_params, args.tau)  # target <- target + tau (online - target)\n",
      "    with torch.no_grad():\n"
      "        torch._foreach_lerp_(target_params, critic_params, args.tau)  # target <- target + tau (online - target)\n"
      "    critic_opt.step()\n",
      (_T + "test_polyak_follows_the_updated_critic",)),
    M("rlpd.py", "dataset-actions-unclipped", "dataset actions: clipped to +-(1 - 1e-5) (demo_arrays)",
      "np.clip(demos[\"actions\"], -1 + 1e-5, 1 - 1e-5)", "demos[\"actions\"]",
      (_T + "test_offline_data_masks_terminations_only_and_clips_actions",)),
    M("rlpd.py", "utd-default-1", "UTD: 20 as in the README's commands, not the flag default 1 (Args)",
      "utd: int = 20  #", "utd: int = 1  #",
      (_T + "test_defaults_are_the_official_ones",)),
]


# ---- rlif.py ----
RLIF_MAIN = "tests/test_rlif.py::test_main_stores_what_the_official_loop_stores"
RLIF_STEP = "tests/test_rlif.py::test_step_decision_one_step_at_a_time"
RLIF_BC = "tests/test_rlif.py::test_bc_loss_is_the_official_nll_plus_alpha_log_pi"
RLIF_BASELINES = "tests/test_rlif.py::test_baselines_label_with_the_expert_and_demos_are_relabelled"
RLIF = [
    M("rlif.py", "takeover-last-step-dropped", "reward labels: a takeover's last expert step is stored (r = 0)",
      "store = None if pending is None or label is None else",
      "store = None if pending is None or label is None or prev_expert else", (RLIF_MAIN, RLIF_STEP)),
    M("rlif.py", "minus-one-label-lost", "reward labels: -1 on the learner step before a takeover",
      "(-1.0 if not prev_expert else None)", "(0.0 if not prev_expert else None)", (RLIF_MAIN, RLIF_STEP)),
    M("rlif.py", "no-hand-back", "takeover: after 4 expert steps the learner acts one step unchecked",
      "elif prev_expert and hand_back:", "elif False:", (RLIF_MAIN, RLIF_STEP)),
    M("rlif.py", "value-rule-without-alpha", "value rule: Q_ref(s, a_l) < alpha Q_ref(s, a_ref) (should_intervene)",
      "q_learner < alpha * q_ref", "q_learner < q_ref",
      ("tests/test_rlif.py::test_value_rule_probabilities",)),
    M("rlif.py", "a-ref-from-intervening-expert", "value rule: a_ref is the reference (expert) policy's action",
      "np.stack([a_l, ref_act(obs)])", "np.stack([a_l, expert_act(obs)])",
      ("tests/test_rlif.py::test_value_model_scores_the_reference_action_with_the_reference_critic",)),
    M("rlif.py", "qref-fitted-on-intervening-expert", "reference agent: Q_ref from the reference policy (fit_qref)",
      "fit_qref(ref_act, make_env(", "fit_qref(expert_act, make_env(",
      ("tests/test_rlif.py::test_value_model_scores_the_reference_action_with_the_reference_critic",)),
    M("rlif.py", "random-model-hands-back", "random model: a coin every step, no takeover length, no hand-back",
      'hand_back = args.intervention == "value"', "hand_back = True",
      ("tests/test_rlif.py::test_random_model_is_a_coin_at_every_step",)),
    M("rlif.py", "random-coin-flipped", "random model: the expert acts with probability p (random_intervention)",
      "return u < prob", "return u < 1.0 - prob",
      ("tests/test_rlif.py::test_random_model_is_a_coin_at_every_step",
       "tests/test_rlif.py::test_value_rule_probabilities")),
    M("rlif.py", "episode-end-keeps-pending", "main(): at an episode end the pending step is stored once, then cleared",
      "            pending, prev_expert, takeover_left = None, False, 0",
      "            prev_expert, takeover_left = False, 0", (RLIF_MAIN,)),
    M("rlif.py", "episode-end-drops-last-transition", "terminations: main() stores the last transition (--terminal)",
      "last_transition(pending, args.gamma, args.terminal,", 'last_transition(pending, args.gamma, "drop",',
      (RLIF_MAIN,)),
    M("rlif.py", "qref-not-monte-carlo", "Q_ref: regression on discounted returns to go (fit_qref)",
      "ret[t] = rews[t] + gamma * ret[t + 1]", "ret[t] = rews[t]",
      ("tests/test_rlif.py::test_fit_qref_regresses_discounted_returns_to_go",)),
    M("rlif.py", "critic-update-ignores-masks", "RLPD's SAC step: y bootstraps through mask 1 only (critic_update)",
      'y = td_target(b["rewards"], b["masks"],', 'y = td_target(b["rewards"], torch.ones_like(b["masks"]),',
      ("tests/test_rlif.py::test_critic_update_bootstraps_only_through_mask_1",
       "tests/test_rlif.py::test_update_steps_are_rlpds_word_for_word")),
    M("rlif.py", "penalty-every-step", "terminations: a fall is -1/(1 - gamma^(T + 1)), the labels' worst (not -100)",
      "-1.0 / (1.0 - gamma ** (takeover_steps + 1))", "-1.0 / (1.0 - gamma)",
      (RLIF_MAIN, "tests/test_rlif.py::test_terminal_label_is_the_worst_continuation_the_labels_can_express")),
    M("rlif.py", "penalty-ignores-random-model", "terminations: random model, -1 labels 2 steps apart (T = 1)",
      'takeover_steps = args.takeover_steps if args.intervention == "value" else 1',
      "takeover_steps = args.takeover_steps", ("tests/test_rlif.py::test_random_model_is_a_coin_at_every_step",)),
    M("rlif.py", "demo-falls-unlabelled", "demos: r = 0, the terminal label on terminations",
      "fall = terminal_label(0.0, args.gamma, args.terminal, takeover_steps)", "fall = 0.0",
      ("tests/test_rlif.py::test_baselines_label_with_the_expert_and_demos_are_relabelled",)),
    M("rlif.py", "last-step-stored-mid-takeover", "terminations: a last step inside a takeover is never stored",
      'return None if terminal == "drop" or takeover_left > 0 else', 'return None if terminal == "drop" else',
      (RLIF_MAIN, "tests/test_rlif.py::test_terminal_label_is_the_worst_continuation_the_labels_can_express")),
    M("rlif.py", "bc-loss-squared-error", "BC baselines: NLL + alpha log pi (bc_loss), not squared error",
      "return (alpha * actor(obs)[1].mean() if alpha else 0.0) - logp.mean()",
      "return ((actor(obs, deterministic=True)[0] - act) ** 2).sum(-1).mean()", (RLIF_BC,)),
    M("rlif.py", "bc-loss-no-alpha-term", "BC baselines: + alpha log pi(a~|s) (bc_loss)",
      "(alpha * actor(obs)[1].mean() if alpha else 0.0)", "0.0", (RLIF_BC,)),
    M("rlif.py", "bc-labels-unclipped", "BC baselines: labels clipped to +-0.999 (bc_loss)",
      "a = actor.trunk(obs), ((act - actor.center) / actor.scale).clamp(-0.999, 0.999)",
      "a = actor.trunk(obs), ((act - actor.center) / actor.scale).clamp(-1 + 1e-5, 1 - 1e-5)", (RLIF_BC,)),
    M("rlif.py", "bc-no-weight-decay", "BC baselines: AdamW, weight decay 1e-3",
      "bc_wd = 0.0 if learns_by_rl else args.bc_weight_decay", "bc_wd = 0.0", (RLIF_BASELINES,)),
    M("rlif.py", "bc-learner-deterministic", "BC baselines: the learner samples its actions",
      "a_l = policy(obs, deterministic=False)", "a_l = policy(obs, deterministic=not learns_by_rl)",
      (RLIF_BASELINES,)),
    M("rlif.py", "ensemble-of-2", "networks: 3 x 256, E = 10, Z = 2, LayerNorm, no entropy backup",
      "num_qs: int = 10", "num_qs: int = 2", ("tests/test_rlif.py::test_defaults_are_the_official_config",)),
    M("rlif.py", "batch-128", "start_training, batch: 0, 256",
      "batch_size: int = 256", "batch_size: int = 128", ("tests/test_rlif.py::test_defaults_are_the_official_config",)),
]


# ---- conrft.py ----
CONRFT_TEST = "tests/test_conrft.py::"
CONRFT = [
    M("conrft.py", "karras-ramp", "Karras levels k_m (consistency policy equation; Karras row)",
      "ramp = torch.linspace(0, 1, num_scales)", "ramp = torch.linspace(0, 1, num_scales) ** 2",
      (CONRFT_TEST + "test_karras_levels_follow_the_formula",)),
    M("conrft.py", "time-input-log-k", "time input: sinusoidal features of 1000 * 0.25 * log(k) (time input row)",
      "self.t_net(1000 * 0.25 * torch.log(sigma + 1e-44))", "self.t_net(torch.log(sigma + 1e-44))",
      (CONRFT_TEST + "test_network_inputs_are_c_in_scaled_action_and_250_log_k",)),
    M("conrft.py", "consistency-weight", "L_c's Karras weight w(k) = 1/k^2 + 1/sd^2 (consistency term; loss row)",
      "w = 1 / k**2 + 1 / sigma_data**2", "w = 1 / k**2",
      (CONRFT_TEST + "test_consistency_loss_levels_and_karras_weight",)),
    M("conrft.py", "consistency-levels", "L_c at a random level of the first M - 1 (consistency loss row)",
      "idx = torch.randint(0, len(sigmas) - 1, (obs.shape[0],))",
      "idx = torch.randint(0, len(sigmas), (obs.shape[0],))",
      (CONRFT_TEST + "test_consistency_loss_levels_and_karras_weight",)),
    M("conrft.py", "td-min-target", "TD target: min of the 2 target critics (TD loss; critic row)",
      'q_next = target_critic(b["next_observations"], next_a).min(0).values.squeeze(-1)',
      'q_next = target_critic(b["next_observations"], next_a).mean(0).squeeze(-1)',
      (CONRFT_TEST + "test_td_loss_is_the_official_target",)),
    M("conrft.py", "td-noisy-next-action", "TD target: one noisy next action a' ~ pi (TD loss)",
      'next_a = policy.sample(b["next_observations"], sigmas, steps)',
      'next_a = policy.sample(b["next_observations"], sigmas, steps, noise=False)',
      (CONRFT_TEST + "test_td_loss_is_the_official_target",)),
    M("conrft.py", "calql-floor", "Cal-QL: each sampled Q floored at the MC return V^mu (Eq. 3; Stage I critic row)",
      'q_ood = calibrate(critic(b["observations"], torch.cat([rand, cur, nxt], 1)), b["mc_returns"].view(1, B, 1))',
      'q_ood = critic(b["observations"], torch.cat([rand, cur, nxt], 1))',
      (CONRFT_TEST + "test_cal_ql_regulariser_floors_every_sampled_q_at_the_mc_return",)),
    M("conrft.py", "policy-loss-eta", "L_pi = -eta E[Q] + beta L_c (Eq. 4)",
      "return -eta * q.mean() + beta * l_c, l_c, q.mean()", "return -q.mean() + beta * l_c, l_c, q.mean()",
      (CONRFT_TEST + "test_policy_loss_weights_eta_and_beta",)),
    M("conrft.py", "stage-two-beta", "Stage II weights eta 1, beta 0.1, constant (Stage I / II weights row)",
      "beta = args.beta_offline if args.beta_fade else args.beta", "beta = args.beta_offline",
      (CONRFT_TEST + "test_stage_weights_eta_beta",)),
    M("conrft.py", "stage-switch", "Stage I critic Cal-QL, Stage II plain TD (Stage II critic row)",
      "stats = critic_update(b, cql=not online or args.online_cql)", "stats = critic_update(b, cql=args.online_cql)",
      (CONRFT_TEST + "test_learner_step_stage_one_cal_ql_then_stage_two_plain_td",)),
    M("conrft.py", "cta-ratio", "cta_ratio critic updates per actor update (learner step; critic updates row)",
      "for _ in range(args.cta_ratio):", "for _ in range(1):",
      (CONRFT_TEST + "test_learner_step_stage_one_cal_ql_then_stage_two_plain_td",)),
    M("conrft.py", "stale-stage-two-optimizers", "fresh Adam for Stage II (Stage I -> II row)",
      "not its optimizer states\n    actor_opt = torch.optim.Adam(policy.parameters(), lr=args.lr)\n"
      "    critic_opt = torch.optim.Adam(critic.parameters(), lr=args.lr)\n",
      "not its optimizer states\n", (CONRFT_TEST + "test_stage_two_optimizers_are_fresh",)),
    M("conrft.py", "mixed-batch-quarter", "Stage II batch half demo, half online (batch row; Stage II)",
      "half = batch_size // 2", "half = batch_size // 4",
      (CONRFT_TEST + "test_mixed_batch_is_half_demo_half_online",)),
    M("conrft.py", "interventions-online-only", "interventions go to both buffers (Stage II; interventions row)",
      "    if by_expert.any():", "    if False:",
      (CONRFT_TEST + "test_store_episode_sends_interventions_to_both_buffers",)),
    M("conrft.py", "truncation-mask-0", "truncations bootstrap (mask 1), terminations do not (episode end row)",
      "done = term or (trunc and args.episode_steps > 0)", "done = term or trunc",
      (CONRFT_TEST + "test_episode_ends_masks_and_takeover_reset",)),
    M("conrft.py", "episode-steps-bootstraps", "--episode-steps: the time limit is done, mask 0 (episode end row)",
      "done = term or (trunc and args.episode_steps > 0)", "done = term",
      (CONRFT_TEST + "test_main_with_episode_steps_and_state_embed",)),
    M("conrft.py", "episode-steps-ignored", "--episode-steps N: training episodes of N steps (episode end row)",
      "env = make_env(args.env_id, args.seed, args.episode_steps or None)()",
      "env = make_env(args.env_id, args.seed)()",
      (CONRFT_TEST + "test_main_with_episode_steps_and_state_embed",)),
    M("conrft.py", "episode-steps-demo-masks", "--episode-steps: demo episode ends are done too (episode end row)",
      'masks = 1.0 - (ends if args.episode_steps else demos["terminations"])', 'masks = 1.0 - demos["terminations"]',
      (CONRFT_TEST + "test_demo_masks_count_every_episode_end_as_done_with_episode_steps",)),
    M("conrft.py", "state-embed-no-layernorm", "critic state embedding Dense -> LayerNorm -> tanh (critic row)",
      "[nn.Linear(obs_dim, embed), nn.LayerNorm(embed), nn.Tanh()]",
      "[nn.Linear(obs_dim, embed), nn.Tanh()]",
      (CONRFT_TEST + "test_critic_state_embedding_is_the_official_dense_layernorm_tanh",)),
    M("conrft.py", "state-embed-unused", "the critic's MLP sees the embedding, not the raw state (critic row)",
      "x = torch.cat([self.embed(obs), act], -1)", "x = torch.cat([self.embed(obs) * 0 + obs[:, :1], act], -1)",
      (CONRFT_TEST + "test_critic_state_embedding_is_the_official_dense_layernorm_tanh",)),
    M("conrft.py", "state-embed-not-passed", "--state-embed reaches the critic and its target (critic row)",
      "critic = CriticEnsemble(obs_dim, act_dim, args.num_qs, args.hidden, args.state_embed)\n"
      "    target_critic = CriticEnsemble(obs_dim, act_dim, args.num_qs, args.hidden, args.state_embed)",
      "critic = CriticEnsemble(obs_dim, act_dim, args.num_qs, args.hidden)\n"
      "    target_critic = CriticEnsemble(obs_dim, act_dim, args.num_qs, args.hidden)",
      (CONRFT_TEST + "test_main_with_episode_steps_and_state_embed",)),
    M("conrft.py", "resume-fresh-adam", "--resume restores Stage I's Adam states (Stage I -> II row, resume)",
      "for key, opt in (opts or {}).items():", "for key, opt in {}.items():",
      (CONRFT_TEST + "test_resume_goes_on_with_a_stage_one_stopped_by_a_signal_exactly",)),
    M("conrft.py", "resume-numpy-rng", "--resume restores the batch sampler's RNG (Stage I -> II row, resume)",
      "rng.bit_generator.state = ckpt[", "rng.bit_generator.state = rng.bit_generator.state or ckpt[",
      (CONRFT_TEST + "test_resume_goes_on_with_a_stage_one_stopped_by_a_signal_exactly",)),
    M("conrft.py", "resume-torch-rng", "--resume restores torch's RNG (Stage I -> II row, resume)",
      'torch.set_rng_state(ckpt["stage_one"]["torch_rng"])', 'torch.get_rng_state()',
      (CONRFT_TEST + "test_resume_goes_on_with_a_stage_one_stopped_by_a_signal_exactly",)),
    M("conrft.py", "resume-from-zero", "--resume goes on from the step where Stage I stopped (Stage I -> II row)",
      'return ckpt.get("stage_one", {}).get("done", 0)', "return 0",
      (CONRFT_TEST + "test_resume_goes_on_with_a_stage_one_stopped_by_a_signal_exactly",)),
    M("conrft.py", "policy-embed-unused", "the policy's MLP sees its own state embedding (critic row)",
      "h = self.net(torch.cat([self.embed(obs), c_in * x,", "h = self.net(torch.cat([self.embed(obs) * 0 + obs[:, :1], c_in * x,",
      (CONRFT_TEST + "test_critic_state_embedding_is_the_official_dense_layernorm_tanh",)),
    M("conrft.py", "policy-embed-not-passed", "--state-embed gives the policy its own embedding (critic row)",
      "args.sigma_data, embed=args.state_embed)", "args.sigma_data)",
      (CONRFT_TEST + "test_main_with_episode_steps_and_state_embed",)),
    M("conrft.py", "policy-embed-shared", "the policy's embedding is its own, not the critic's (critic row)",
      "target_critic.load_state_dict(critic.state_dict())",
      "target_critic.load_state_dict(critic.state_dict())\n    policy.embed = critic.embed",
      (CONRFT_TEST + "test_main_with_episode_steps_and_state_embed",)),
    M("conrft.py", "eval-episode-steps-ignored", "--episode-steps: evaluation episodes of N steps too (episode end row)",
      "args.episode_steps or None)  # --episode-steps: evaluation", "None)  # --episode-steps: evaluation",
      (CONRFT_TEST + "test_main_with_episode_steps_and_state_embed",)),
    M("conrft.py", "bad-episode-steps", "bad input ends in one sentence (--episode-steps, --state-embed)",
      "if min(self.episode_steps, self.state_embed) < 0:", "if False:",
      (CONRFT_TEST + "test_negative_episode_steps_or_state_embed_end_in_one_sentence",)),
    M("conrft.py", "sac-std-untrained", "SAC baseline, Stage I: the std head learns (SAC baseline row)",
      "return -eta * q + beta * (l_bc + l_bc_std), l_bc, q", "return -eta * q + beta * l_bc, l_bc, q",
      (CONRFT_TEST + "test_sac_stage_one_trains_the_std_by_the_demos_likelihood_and_the_mean_by_mse",)),
    M("conrft.py", "sac-std-through-trunk", "SAC baseline, Stage I: the std term leaves trunk and mean to the MSE",
      "actor.log_std(h.detach())", "actor.log_std(h)",
      (CONRFT_TEST + "test_sac_stage_one_trains_the_std_by_the_demos_likelihood_and_the_mean_by_mse",)),
    M("conrft.py", "sac-std-pre-tanh", "SAC baseline, Stage I: the std's likelihood in action space (tanh linearised)",
      "std = (1 - m.detach() ** 2).clamp_min(1e-6) * actor", "std = actor",
      (CONRFT_TEST + "test_sac_stage_one_trains_the_std_by_the_demos_likelihood_and_the_mean_by_mse",)),
]


# ---- asap_delta.py ----
ASAP_T = "tests/test_asap.py::"
ASAP_MAIN = ASAP_T + "test_main_fine_tunes_in_the_sim_its_method_builds"
ASAP_GAP = ASAP_T + "test_unmodelled_actuator_gaps_pass_the_checker_and_act_as_documented"
ASAP_FLAGS = ASAP_T + "test_gap_flags_reach_the_real_env_and_bad_values_end_in_one_sentence"
ASAP = [
    M("asap_delta.py", "finetune-in-plain-sim", "fine-tuning: the policy trains in the sim with the frozen delta",
      'sim_id = register_env("aligned", args.env_id, lambda env: AlignedSim(env, delta_model))',
      "sim_id = args.env_id", (ASAP_MAIN + "[asap]",)),
    M("asap_delta.py", "aligned-sim-without-delta", "Stage 4: each action a becomes a + pi_delta(s, a) in sim",
      "return self.env.step(np.clip(a + np.clip(self.delta_model.act(np.concatenate([s, a])), -1, 1), -1, 1))",
      "return self.env.step(a)",
      (ASAP_T + "test_aligned_sim_shifts_the_next_state_as_the_same_action_shift_in_the_plain_sim",)),
    M("asap_delta.py", "finetune-from-scratch", "fine-tuning: from the shipped expert's weights",
      'actor = GaussianMLP(obs_dim, act_dim, args.finetune_std, p["obs_mean"], p["obs_var"], init=p)',
      'actor = GaussianMLP(obs_dim, act_dim, args.finetune_std, p["obs_mean"], p["obs_var"])',
      (ASAP_MAIN + "[finetune-sim]",)),
    M("asap_delta.py", "finetune-critic-unnormalised", "PPO's critic sees its actor's normalised inputs (fine-tuning)",
      'critic = critic_net(obs_dim, p["obs_mean"], p["obs_var"])', "critic = critic_net(obs_dim)",
      (ASAP_MAIN + "[finetune-sim]",)),
    M("asap_delta.py", "delta-critic-unnormalised", "delta critic: the actor's observation, normalised",
      "critic_net(obs_dim + act_dim, mean, var)", "critic_net(obs_dim + act_dim)", (ASAP_MAIN + "[asap]",)),
    M("asap_delta.py", "state-error-tracks-root-x", "r = -||s^sim - s^real||_W^2 ...: W leaves out the root's x",
      "((qpos[..., 1:] - qpos_ref[..., 1:]) ** 2)", "((qpos - qpos_ref) ** 2)",
      (ASAP_T + "test_tracking_reward_sign_and_shape",)),
    M("asap_delta.py", "track-reward-no-delta-penalty", "r = ... - lambda ||delta||^2",
      "return -err - lam * float(np.sum(np.square(delta)))", "return -err",
      (ASAP_T + "test_tracking_reward_sign_and_shape",)),
    M("asap_delta.py", "official-reward-body-sigma", "delta reward, official form: body position sigma 0.03",
      "kern(qpos[1:3], qpos_ref[1:3], 0.03)", "kern(qpos[1:3], qpos_ref[1:3], 0.1)",
      (ASAP_T + "test_official_reward_terms_and_kernel_widths",)),
    M("asap_delta.py", "delta-env-terminates-on-fall", "falls in the delta env never terminate, only truncate",
      'return self._obs(), r, False, bool(trunc), {"tracking_error": err}',
      'return self._obs(), r, not self.sim.is_healthy, bool(trunc), {"tracking_error": err}',
      (ASAP_T + "test_delta_env_never_terminates_on_a_fall",)),
    M("asap_delta.py", "delta-sees-last-real-action", "delta model inputs: sim obs + the real action applied next",
      'self.traj["act"][min(self.t, len(self.traj["act"]) - 1)]', 'self.traj["act"][max(self.t - 1, 0)]',
      (ASAP_T + "test_delta_env_never_terminates_on_a_fall",)),
    M("asap_delta.py", "delta-env-not-reset-to-real", "Stage 3: the sim reset to recorded real states",
      'self.sim.set_state(self.traj["qpos"][self.t], self.traj["qvel"][self.t])',
      "self.sim.set_state(self.sim.init_qpos, self.sim.init_qvel)",
      (ASAP_T + "test_reset_to_state_replays_a_real_transition_exactly_when_physics_match",)),
    M("asap_delta.py", "ppo-unclipped", "PPO: clipped surrogate, clip 0.2 (ppo_loss)",
      "-adv * ratio.clamp(1 - clip_coef, 1 + clip_coef)", "-adv * ratio", (ASAP_T + "test_ppo_loss_clips_the_ratio",)),
    M("asap_delta.py", "gae-through-episode-ends", "PPO: GAE, cut at episode ends (gae)",
      "last = td_error + gamma * lam * (1 - done[t]) * last", "last = td_error + gamma * lam * last",
      (ASAP_T + "test_gae_bootstraps_from_next_values_and_cuts_at_episode_ends",)),
    M("asap_delta.py", "sysid-finetunes-in-plain-sim", "SysID baseline: fine-tune in the sim with the fitted scales",
      'sim_id = register_env("sysid", args.env_id, lambda env: PhysicsGap(env, *scales))',
      'sim_id = register_env("sysid", args.env_id, lambda env: PhysicsGap(env))', (ASAP_MAIN + "[sysid]",)),
    M("asap_delta.py", "sysid-worst-scale", "SysID baseline: the scales with the least tracking error",
      "scales = trials[int(np.argmin(errs))]", "scales = trials[int(np.argmax(errs))]",
      (ASAP_T + "test_sysid_search_picks_the_scale_with_the_least_error",)),
    M("asap_delta.py", "real-no-dead-zone", "real, NOT official: actuator dead zone (PhysicsGap)",
      "np.maximum(np.abs(a) - self.dead_zone, 0)", "np.abs(a)", (ASAP_GAP,)),
    M("asap_delta.py", "real-no-saturation", "real, NOT official: actuator saturation (PhysicsGap)",
      "-self.saturation, self.saturation)", "-1.0, 1.0)", (ASAP_GAP,)),
    M("asap_delta.py", "real-no-lowpass", "real, NOT official: first-order low-pass filter on actions (PhysicsGap)",
      "self.applied = self.lowpass * self.applied + (1 - self.lowpass) * u", "self.applied = u", (ASAP_GAP,)),
    M("asap_delta.py", "real-lowpass-kept-over-reset", "real, NOT official: the filter starts from 0 at every reset",
      "self.applied = np.zeros(self.action_space.shape)", 'self.applied = getattr(self, "applied", np.zeros(3))',
      (ASAP_GAP,)),
    M("asap_delta.py", "real-gap-flags-unused", "real: --dead-zone, --saturation, --action-lowpass build the real env",
      "args.dead_zone, args.saturation,\n        args.action_lowpass))", "0.0, 1.0,\n        0.0))", (ASAP_FLAGS,)),
    M("asap_delta.py", "gap-flags-unchecked", "bad input ends in one sentence (check_args)",
      "if not (0 <= args.dead_zone < 1 and 0 < args.saturation <= 1 and 0 <= args.action_lowpass < 1):",
      "if False:", (ASAP_FLAGS,)),
]


# ---- ire_vla_lite.py ----
T_IRE = "tests/test_ire_vla.py::"
IRE_VLA = [
    M("ire_vla_lite.py", "rollout-obs-view", "D_RL stores the observation each action was taken in",
      'cur[i]["obs"].append(obs[i].copy())', 'cur[i]["obs"].append(obs[i])',
      (T_IRE + "test_rollout_stores_each_step_s_own_observation",)),
    M("ire_vla_lite.py", "ppo-batch-obs-view", "PPO's batch holds the observation each action was taken in",
      "o = torch.tensor(obs)", "o = torch.as_tensor(obs)",
      (T_IRE + "test_rollout_stores_each_step_s_own_observation",)),
    M("ire_vla_lite.py", "lora-scale-alpha", "LoRA: W x + (alpha / r) B A x (map: VLA, LoRALinear)",
      "self.scale = alpha / rank", "self.scale = alpha",
      (T_IRE + "test_lora_starts_as_identity_and_scales_by_alpha_over_r",)),
    M("ire_vla_lite.py", "sft-loss-l1", "SFT: min E ||pi(o, l) - a||^2 (map: sft_loss())",
      "- act) ** 2).sum(-1).mean()", "- act).abs()).sum(-1).mean()",
      (T_IRE + "test_sft_loss_is_the_squared_error_of_the_action_head_s_mean",)),
    M("ire_vla_lite.py", "ppo-unclipped", "RL algorithm: PPO's clipped surrogate (map: ppo_loss())",
      "-adv * ratio.clamp(1 - clip_coef, 1 + clip_coef)", "-adv * ratio",
      (T_IRE + "test_ppo_loss_clips_the_ratio",)),
    M("ire_vla_lite.py", "logp-of-clipped-action", "RL algorithm: log-prob of the raw sample (map: sample_action())",
      "return a, dist.log_prob(a).sum(-1), a.clamp(-1, 1)",
      "return a, dist.log_prob(a.clamp(-1, 1)).sum(-1), a.clamp(-1, 1)",
      (T_IRE + "test_ppo_stores_the_raw_sample_and_its_log_prob_and_d_rl_the_clipped_action",)),
    M("ire_vla_lite.py", "time-limit-not-bootstrapped", "RL algorithm: time limits bootstrapped (map: gae())",
      ' + b["trunc_val"] * (1 - b["term"])', "",
      (T_IRE + "test_rl_stage_bootstraps_truncated_episodes",)),
    M("ire_vla_lite.py", "dense-reward", "RL stages: sparse reward 1 on success (the env's dense reward instead)",
      'float(info["success"]), float(term or trunc)', "float(_), float(term or trunc)",
      (T_IRE + "test_rl_stage_bootstraps_truncated_episodes",)),
    M("ire_vla_lite.py", "d-rl-keeps-failures", "D_RL receives only successful trajectories (map: successful())",
      "wins = successful(trajs)", "wins = trajs",
      (T_IRE + "test_main_runs_one_full_iteration_and_d_rl_joins_the_sft_data",)),
    M("ire_vla_lite.py", "sft-without-d-rl", "SFT stages: on D_e united with D_RL (D_e alone instead)",
      "torch.cat([D_e[k]] + D_rl[k])", "torch.cat([D_e[k]])",
      (T_IRE + "test_main_runs_one_full_iteration_and_d_rl_joins_the_sft_data",)),
    M("ire_vla_lite.py", "stage0-trains-lora", "stage 0: base weights + heads, LoRA kept at zero",
      "model.backbone_params(lora=False) + model.head_params(), args.sft0_steps",
      "list(model.parameters()), args.sft0_steps",
      (T_IRE + "test_stage_0_trains_the_base_and_heads_and_keeps_lora_at_zero",)),
    M("ire_vla_lite.py", "rl-unfreezes-backbone", "RL stages: backbone frozen, only the heads train",
      'rl_whole_model = args.mode == "plain-rl"', "rl_whole_model = True",
      (T_IRE + "test_main_runs_one_full_iteration_and_d_rl_joins_the_sft_data",)),
    M("ire_vla_lite.py", "sft-trains-base", "SFT stages: LoRA + heads, not the base weights",
      "model.backbone_params(lora=True) if sft_lora", "model.backbone_params(lora=False) if sft_lora",
      (T_IRE + "test_main_runs_one_full_iteration_and_d_rl_joins_the_sft_data",)),
    M("ire_vla_lite.py", "freeze-unfreezes", "--mode freeze: even stages train only the heads",
      'sft_lora = args.mode != "freeze"', "sft_lora = True",
      (T_IRE + "test_main_freeze_never_unfreezes_the_backbone",)),
    M("ire_vla_lite.py", "plain-rl-runs-sft", "--mode plain-rl: no SFT stage after stage 0",
      'sft_stages = args.mode != "plain-rl"', "sft_stages = True",
      (T_IRE + "test_main_plain_rl_trains_the_whole_model_and_has_no_sft_stage",)),
]


# ---- grape_tpo.py ----
GRAPE = [
    M("grape_tpo.py", "sft-mse", "SFT: the Gaussian NLL E[-log pi(a | o, q)] (sft_loss)",
      "return -model.dist(obs, words).log_prob(act).sum(-1).mean()",
      "return ((model.dist(obs, words).mean - act) ** 2).sum(-1).mean()",
      ("tests/test_grape.py::test_sft_loss_is_the_gaussian_nll",)),
    M("grape_tpo.py", "sample-the-mean", "sampling: the Gaussian with its learned std (do_sample)",
      "a = dist.sample()", "a = dist.mean",
      ("tests/test_grape.py::test_sampling_keeps_the_raw_action_and_its_log_prob",)),
    M("grape_tpo.py", "logp-of-clipped-action", "raw-sample log-probs (sample_trajectories)",
      "logp = dist.log_prob(a).sum(-1)", "logp = dist.log_prob(a.clamp(-1, 1)).sum(-1)",
      ("tests/test_grape.py::test_sampling_keeps_the_raw_action_and_its_log_prob",)),
    M("grape_tpo.py", "groups-without-a-shared-start", "pairs: the M rollouts of a group share one initial state",
      "[st for st in starts for _ in range(M)]", "[st for _ in range(M) for st in starts]",
      ("tests/test_grape.py::test_groups_share_a_start_and_pairs_stay_within_them",)),
    M("grape_tpo.py", "pair-top-with-second-worst", "pairs: the i-th best with the i-th worst (make_pairs)",
      "w, lo = order[i], order[-1 - i]", "w, lo = order[i], order[-2 - i]",
      ("tests/test_grape.py::test_pairs_top_with_bottom_skip_ties_and_never_self",)),
    M("grape_tpo.py", "r-self-mean", "R_self: the official sum_t log max(p_t, 0.05), not a per-step mean",
      "return float(np.sum(np.clip(logp, np.log(0.05), 0.0)))",
      "return float(np.mean(np.clip(logp, np.log(0.05), 0.0)))",
      ("tests/test_grape.py::test_r_self_is_the_official_clipped_sum",)),
    M("grape_tpo.py", "r-ext-no-threshold", "R_ext = prod_i exp(-beta_ext max(0, C_i - thr)) (external_reward)",
      "np.maximum(0.0, np.asarray(costs) - threshold)", "(np.asarray(costs) - threshold)",
      ("tests/test_grape.py::test_reward_aggregation_and_stage_costs",)),
    M("grape_tpo.py", "r-ext-no-progress", "R_ext ranks progress first: stages done, then cost (NOT official row)",
      "float((done + np.exp(", "float((0 + np.exp(",
      ("tests/test_grape.py::test_stage_progress_ranks_before_cost",)),
    M("grape_tpo.py", "gcpg-success-weight", "Eq. 9 with the I_success weight lambda_3 (gcpg_reward)",
      "lambda_success * float(success)", "float(success)",
      ("tests/test_grape.py::test_reward_aggregation_and_stage_costs",)),
    M("grape_tpo.py", "margin-mean", "log pi(zeta) = sum_t log pi(a_t | o_t, q) (preference_margins)",
      "(logp_l[:T] - ref_l[:T])).sum()[None]", "(logp_l[:T] - ref_l[:T])).mean()[None]",
      ("tests/test_grape.py::test_margins_truncate_to_the_shorter_and_sum_steps",)),
    M("grape_tpo.py", "tpo-loss-without-beta", "TPO loss: -log sigmoid(beta * margin) (tpo_loss, Eq. 7)",
      "return -F.logsigmoid(beta * margins).mean()", "return -F.logsigmoid(margins).mean()",
      ("tests/test_grape.py::test_tpo_loss_shape_sign_and_preferring_the_winner_lowers_it",)),
    M("grape_tpo.py", "beta-default", "TPO loss: beta 0.1 (finetune.py)",
      "beta: float = 0.1", "beta: float = 1.0", (
      "tests/test_grape.py::test_main_tpo_trains_lora_and_head_vs_frozen_ref",)),
    M("grape_tpo.py", "tpo-plus-sft-term", "TPO loss: no SFT term (finetune.py)",
      "loss = tpo_loss(margin, beta)", "loss = tpo_loss(margin, beta) - step_log_probs(model, trajs[w], steps).mean()",
      ("tests/test_grape.py::test_windows_of_all_pairs_flattened_shuffled_one_step_each",)),
    M("grape_tpo.py", "ref-stays-the-sft-policy", "pi_ref: the policy at the start of each iteration (finetune.py)",
      "ref = copy.deepcopy(model).requires_grad_(False)",
      "ref = ref if it > 1 else copy.deepcopy(model).requires_grad_(False)", (
      "tests/test_grape.py::test_main_tpo_trains_lora_and_head_vs_frozen_ref",)),
    M("grape_tpo.py", "one-optimiser-for-all-iterations", "optimiser: a fresh AdamW per iteration (finetune.py run)",
      "tpo_opt = torch.optim.AdamW(", "tpo_opt = tpo_opt if it > 1 else torch.optim.AdamW(", (
      "tests/test_grape.py::test_main_tpo_trains_lora_and_head_vs_frozen_ref",)),
    M("grape_tpo.py", "tpo-trains-everything", "TPO trains LoRA + head only (TPO-LoRA): main()'s optimiser",
      "torch.optim.AdamW(model.tpo_param_groups(args.tpo_weight_decay), lr=args.tpo_lr)",
      "torch.optim.AdamW(model.parameters(), lr=args.tpo_lr)", (
      "tests/test_grape.py::test_main_tpo_trains_lora_and_head_vs_frozen_ref",)),
    M("grape_tpo.py", "log-std-decayed", "optimiser: weight decay 0.01 on adapters and head, none on log_std",
      '{"params": [self.log_std], "weight_decay": 0.0}', '{"params": [self.log_std], "weight_decay": weight_decay}',
      (
      "tests/test_grape.py::test_main_tpo_trains_lora_and_head_vs_frozen_ref",)),
    M("grape_tpo.py", "one-window-per-pair", "optimiser: one step per 8-step window of every pair (finetune.py)",
      "n = T if window <= 0 else min(window, T)", "n = T",
      ("tests/test_grape.py::test_windows_of_all_pairs_flattened_shuffled_one_step_each",)),
    M("grape_tpo.py", "windows-not-shuffled", "optimiser: all pairs' windows flattened and shuffled (flatshape)",
      "return [units[i] for i in rng.permutation(len(units))]", "return units",
      ("tests/test_grape.py::test_windows_of_all_pairs_flattened_shuffled_one_step_each",)),
]


# ---- inril_pcgrad.py and inril_residual.py ----
_P, _R, _T = "inril_pcgrad.py", "inril_residual.py", "tests/test_inril.py::"
INRIL = [
    M(_R, "mujoco-residual-is-resip", "residual on MuJoCo: scale 1, std 0.5, no L2 (not ResiP's)",
      "else (1.0, -0.6931, 0.0)", "else (0.1, -1.5, 0.01)",
      (_T + "test_residual_defaults_follow_resip_on_metaworld_and_explore_on_mujoco",)),
    M(_R, "residual-defaults-ignore-env", "ResiP's residual on MetaWorld, the wider one on MuJoCo",
      'if self.env_id.startswith("metaworld/") else', 'if self.env_id.startswith("Meta-World/") else',
      (_T + "test_residual_defaults_follow_resip_on_metaworld_and_explore_on_mujoco",)),
    M(_P, "il-step-after-m-plus-1", "update rule (Sec. 4.1): one IL step after every m(t) RL steps",
      "if interleave and since_il >= m_t:", "if interleave and since_il > m_t:",
      (_T + "test_main_one_il_step_after_every_m_rl_steps[pcgrad]",)),
    M(_P, "project-step-flag-ignored", "projection of the applied Adam step: off, or on with --project-step",
      "    if step_hit and project_step:", "    if step_hit:", (_T + "test_no_project_step_is_pcgrad_then_adam",)),
    M(_P, "project-step-not-passed", "projection of the applied Adam step: --project-step reaches rl_step()",
      "                              args.project_step)", "                              False)",
      (_T + "test_main_passes_project_step",)),
    M(_P, "project-step-default-on", "projection of the applied Adam step: off by default (not in the paper)",
      "    project_step: bool = False  #", "    project_step: bool = True  #", (_T + "test_main_passes_project_step",)),
    M(_R, "il-step-after-m-plus-1", "base updates during RL (Sec. 4.1): one IL step after every m(t) RL steps",
      "if interleave and since_il >= m_t:", "if interleave and since_il > m_t:",
      (_T + "test_main_one_il_step_after_every_m_rl_steps[residual]",)),
    M(_P, "il-shares-rl-adam", "update rule: step sizes alpha_IL, alpha_RL in two Adam states",
      "il_opt = torch.optim.Adam(actor_params, lr=args.il_lr, eps=1e-5)", "il_opt = rl_opt",
      (_T + "test_main_il_and_rl_have_own_optimizers_and_networks[pcgrad]",)),
    M(_R, "rl-trains-the-base", "network separation: the base gets IL steps only, the residual RL steps only",
      "rl_opt = torch.optim.Adam(res_params,", "rl_opt = torch.optim.Adam(base_params,",
      (_T + "test_main_il_and_rl_have_own_optimizers_and_networks[residual]",)),
    M(_R, "executes-unscaled-residual", "network separation: the executed action is base(s) + scale * u",
      "envs.step((a_base + scale * u).cpu().numpy())", "envs.step((a_base + u).cpu().numpy())",
      (_T + "test_main_residual_executes_base_plus_scaled_u[residual]",)),
    M(_P, "pcgrad-keeps-conflict", "surgery (1): PCGrad removes g_RL's component along g_IL when they conflict",
      "    return g - dot / (g_ref.norm() ** 2 + 1e-12) * g_ref, True", "    return g, True",
      (_T + "test_projection_orthogonal_when_conflicting",)),
    M(_P, "adam-step-not-projected", "surgery (3): the applied Adam step is projected off g_IL too",
      "    descent, step_hit = project_conflicting(descent, g_il)  # (3)", "    step_hit = False  # (3)",
      (_T + "test_projected_rl_step_never_raises_il_loss_to_first_order",)),
    M(_P, "rho-not-cosine", "rho: the cosine of the two loss gradients",
      "/ (g_il.norm() * g_rl.norm() + 1e-12))", "/ 1.0)",
      (_T + "test_rho_cosine_and_dynamic_m_direction",)),
    M(_R, "rho-density-not-action-units", "rho: L_RL of the combined policy, old log-probs in action units",
      'old_logp = mb["logp"] - mb["u"].shape[-1] * float(np.log(scale))', 'old_logp = mb["logp"]',
      (_T + "test_combined_rl_loss_uses_the_residual_density_in_action_units",)),
    M(_P, "dynamic-m-wrong-direction", "dynamic m(t): conflict (rho < 0) -> more RL steps per IL step",
      "round(m * 3.0 ** (-rho_bar))", "round(m * 3.0 ** rho_bar)",
      (_T + "test_rho_cosine_and_dynamic_m_direction",)),
    M(_P, "rho-bar-not-ema", "dynamic m(t): rho_bar <- 0.9 rho_bar + 0.1 rho(t), one update per cycle",
      "rho_bar = 0.9 * rho_bar + 0.1 * rho", "rho_bar = rho",
      (_T + "test_main_rho_bar_is_the_ema_of_rho_and_sets_m[pcgrad]",)),
    M(_P, "bc-loss-mean-over-dims", "stage 1, BC: ||mu(s) - a||^2 summed over the action dims",
      "return ((pred - act) ** 2).sum(-1).mean()", "return ((pred - act) ** 2).mean()",
      (_T + "test_losses_values",)),
    M(_R, "il-loss-not-half", "L_IL = -log N(a; base(s), I) = 0.5 ||base(s) - a||^2 + const",
      "return 0.5 * squared_error(base(obs), act)", "return squared_error(base(obs), act)",
      (_T + "test_losses_values",)),
    M(_P, "il-loss-moves-std", "L_IL: NLL of the demo actions, the std detached",
      "mean, std = policy(obs), policy.log_std.exp().detach()", "mean, std = policy(obs), policy.log_std.exp()",
      (_T + "test_loss_shapes",)),
    M(_P, "ppo-unclipped", "L_RL: PPO's clipped surrogate", "ratio.clamp(1 - clip_coef, 1 + clip_coef)", "ratio",
      (_T + "test_clipped_surrogate_clips_the_ratio",)),
    M(_P, "gae-crosses-episodes", "L_RL: GAE advantages, cut at episode ends",
      "last = delta + gamma * lam * (1.0 - dones[t]) * last", "last = delta + gamma * lam * last",
      (_T + "test_gae_cuts_at_episode_ends_and_bootstraps",)),
    M(_R, "no-critic-warmup", "value-only warm-up: the first rollouts train only the critic (ResiP's 5)",
      "if it < args.critic_warmup_iters:", "if it < 0:",
      (_T + "test_main_one_il_step_after_every_m_rl_steps[residual]",)),
    M(_R, "residual-head-not-zero", "residual output: head zero at the start (ResiP)",
      "        nn.init.zeros_(self.r[-1].weight)  # the residual is exactly zero at the start\n", "",
      (_T + "test_zero_init_residual_reproduces_base",)),
    M(_R, "residual-ignores-base-action", "residual input: concat(obs, base action) (ResiP)",
      "self.r(torch.cat([((obs - self.obs_mean) / self.obs_std).clamp(-10, 10), a_base], -1))",
      "self.r(torch.cat([((obs - self.obs_mean) / self.obs_std).clamp(-10, 10), 0 * a_base], -1))",
      (_T + "test_residual_penalty_and_critic_input",)),
    M(_R, "no-residual-penalty", "residual penalty: l1 |r| + l2 r^2 on the residual mean, in L_RL (ResiP)",
      "return surrogate + residual_penalty(d.mean, l1, l2), surrogate, approx_kl",
      "return surrogate, surrogate, approx_kl", (_T + "test_residual_rl_loss_is_ppo_plus_penalty",)),
]


# ---- every file: the layout and the docstring's map (tests/test_layout.py) ----
LAYOUT = [
    M("rlpd.py", "map-points-nowhere", "every '-> name()' of the docstring map is defined in the file",
      "def subset_min_target(", "def subset_min_target_renamed(",
      ("tests/test_layout.py::test_docstring_map_names_exist[rlpd]",)),
    M("conrft.py", "no-shared-banner", "one banner, then the shared blocks, then the fidelity table",
      "# ==== shared helpers: identical in every file (see template.py) ====", "# shared helpers",
      ("tests/test_layout.py::test_layout_method_first_then_banner_shared_blocks_fidelity_table[conrft]",)),
]


MUTANTS = LAYOUT + RLPD + RLIF + CONRFT + ASAP + IRE_VLA + GRAPE + INRIL


def copy_repo(dest):
    """The method files, tests and pytest.ini copied; data/ linked (read only)."""
    for name in os.listdir(ROOT):
        src = os.path.join(ROOT, name)
        if name.endswith(".py") or name == "pytest.ini":
            shutil.copy(src, dest)
    shutil.copytree(os.path.join(ROOT, "tests"), os.path.join(dest, "tests"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    os.symlink(os.path.join(ROOT, "data"), os.path.join(dest, "data"))


def start_tests(m, dest):
    """Apply m in the copy `dest` and start its tests in a forked child (the heavy imports are already loaded, so
    a mutant costs only its tests). Returns (pid, the original text, start time); 'STALE: ...' if m.old is not
    found exactly once."""
    path = os.path.join(dest, m.file)
    original = open(path).read()
    if (n := original.count(m.old)) != 1:
        return f"STALE: the text is found {n} times in {m.file}"
    open(path, "w").write(original.replace(m.old, m.new))
    pid = os.fork()
    if pid == 0:  # the child: run pytest in the copy, quietly, for at most 300 s
        try:
            os.chdir(dest)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            signal.alarm(300)
            code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", *m.tests])
        except BaseException:
            code = 1
        os._exit(int(code))
    return pid, original, time.time()


def outcome(status):
    """killed when the tests failed (or hung), STALE when pytest found no such test."""
    code = os.waitstatus_to_exitcode(status)
    if code in (4, 5):  # usage error or no test collected: a test id in the table is wrong
        return "STALE: pytest exit %d (is every test id right?)" % code
    return "killed" if code != 0 else "SURVIVED"


def main(argv):
    jobs = int(argv[argv.index("--jobs") + 1]) if "--jobs" in argv else 2
    words = [a for i, a in enumerate(argv) if not a.startswith("--") and (i == 0 or argv[i - 1] != "--jobs")]
    todo = [m for m in MUTANTS if not words or any(w in m.file for w in words)]
    names = [(m.file, m.name) for m in MUTANTS]
    if len(set(names)) != len(names):
        raise SystemExit("tools/mutants.py: two mutants of one file share a name.")
    if "--list" in argv:
        for m in todo:
            print(f"{m.file:18s} {m.name:28s} {m.row}\n{'':47s} tests: {', '.join(m.tests)}")
        print(f"{len(todo)} mutants")
        return 0
    start, results = time.time(), {}
    with tempfile.TemporaryDirectory() as tmp:
        free = [os.path.join(tmp, f"copy{j}") for j in range(jobs)]
        for d in free:
            os.makedirs(d)
            copy_repo(d)
        running, queue = {}, list(enumerate(todo))  # pid -> (index, copy, original text, start)
        while queue or running:
            while queue and free:
                i, m = queue.pop(0)
                d = free.pop()
                started = start_tests(m, d)
                if isinstance(started, str):
                    results[i] = (started, 0.0)
                    free.append(d)
                    continue
                running[started[0]] = (i, d, *started[1:])
            if running:
                pid, status = os.wait()
                i, d, original, t0 = running.pop(pid)
                open(os.path.join(d, todo[i].file), "w").write(original)
                free.append(d)
                results[i] = (outcome(status), time.time() - t0)
                print(f"{results[i][0]:8s} {todo[i].file}: {todo[i].name} ({results[i][1]:.1f} s)", flush=True)
    bad = [(todo[i], r) for i, (r, _) in sorted(results.items()) if r != "killed"]
    print(f"{len(todo) - len(bad)} of {len(todo)} mutants killed in {time.time() - start:.0f} s")
    for m, r in bad:
        print(f"  {r}: {m.file} {m.name} ({m.row})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""`algo`: the GRPO hyperparameters (group size, KL, clipping, loss aggregation and policy-loss
variant, advantages, dynamic sampling, entropy terms).

Its own module so that schema.py stays one screen per group; GrpoConfig reaches it as
`algo`. The presets of configs/algo/*.yaml set these keys; trainer/settings.py turns them
into the LossSettings of algo/loss.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from grpo_cli.config.fields import bounded, choice


@dataclass
class AlgoConfig:
    # G: completions sampled per prompt.
    num_generations: int = bounded(8, lo=2, resume_fixed=True)
    # Coefficient of the k3 KL penalty to the reference policy (0 = no reference pass).
    beta: float = bounded(0.04, lo=0)
    # Clip range of the ratio: [1 - epsilon_low, 1 + epsilon_high] (DAPO clip-higher: 0.28).
    epsilon_low: float = bounded(0.2, lo=0, hi=1)
    epsilon_high: float = bounded(0.2, lo=0)
    # The policy-gradient surrogate (README "Algorithms"): clip = PPO/GRPO's clipped ratio;
    # cispo = MiniMax-M1's clipped, detached importance weight times logp (every token keeps
    # a gradient; the paper sets no lower bound: epsilon_low=1); sapo = Qwen's soft gate
    # sigmoid(tau (rho - 1)) * 4 / tau in place of the clip (no clip range, nothing clipped).
    policy_loss: str = choice("clip", ["clip", "cispo", "sapo"])
    # SAPO's gate temperatures for A > 0 and A <= 0: larger = the gate closes faster as rho
    # leaves 1 (the paper: 1.0 / 1.05, negative tokens damped more). policy_loss=sapo only.
    sapo_tau_pos: float = bounded(1.0, gt=0)
    sapo_tau_neg: float = bounded(1.05, gt=0)
    # Importance ratio per token (GRPO), or per sequence (GSPO: exp of the mean token
    # log-ratio of the completion, clipped as one; GSPO's own range is 3e-4 / 4e-4).
    ratio_level: str = choice("token", ["token", "sequence"])
    # INTELLECT-2's two-sided clipping: the unclipped ratio is capped at delta, so a token
    # with a negative advantage and a runaway ratio stops pushing (null = off; must be
    # > 1 + epsilon_high; policy_loss=clip only).
    delta: Optional[float] = bounded(None, gt=1)
    # Entropy bonus: each token's loss gets - entropy_coef * H_t (the policy's token entropy,
    # with its gradient: pushes against entropy collapse; 0 = off, no extra work).
    entropy_coef: float = bounded(0.0, lo=0)
    # Keep the policy term only on the tokens whose entropy is in the top q of the optimizer
    # step's completion tokens (every rank's; "Beyond the 80/20 Rule": 0.2). The entropies are
    # the sampling policy's (one more no-grad pass); the KL term keeps every token; 1 = off.
    top_entropy_quantile: float = bounded(1.0, gt=0, hi=1)
    # Token aggregation of the loss.
    loss_agg: str = choice("seq_mean_token_mean",
                           ["seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm"])
    # Advantage scaling: group std (GRPO), batch std, or none (Dr. GRPO).
    scale_rewards: str = choice("group", ["group", "batch", "none"])
    # Baseline subtracted from each reward: group mean, or leave-one-out mean (RLOO).
    baseline: str = choice("mean", ["mean", "rloo"])
    # Added to the std before dividing.
    adv_eps: float = bounded(1e-4, gt=0)
    # Optimisation passes over each batch of rollouts (mu in the GRPO paper).
    num_iterations: int = bounded(1, lo=1)
    # DAPO dynamic sampling: drop zero-variance groups and sample more prompts to refill.
    dynamic_sampling: bool = False
    # Extra sampling rounds allowed to refill the batch.
    dynamic_sampling_max_rounds: int = bounded(3, lo=0)
    # Exclude completions cut at max_new_tokens from the loss (DAPO overlong filtering).
    mask_truncated: bool = False
    # Sampler correction (truncated importance sampling) for merged decoding: each token's
    # policy-gradient term is weighted by min(pi_train / pi_sampler, is_cap); null = off.
    # README: "Merged decoding and the sampler correction".
    is_cap: Optional[float] = bounded(2.0, gt=0)
    # Adaptive KL controller: target KL (null = fixed beta), starting from algo.beta (> 0).
    # Each step beta *= 1 + clip(kl / kl_target - 1, -0.2, 0.2) / kl_horizon, so beta moves
    # at most 20% per kl_horizon steps.
    kl_target: Optional[float] = bounded(None, gt=0)
    kl_horizon: int = bounded(1000, lo=1)

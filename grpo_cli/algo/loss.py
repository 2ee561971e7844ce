"""The GRPO loss: clipped policy-gradient surrogate + k3 KL penalty, pure tensor math.

Per completion token t of sequence i (``mask`` marks completion tokens, not padding)::

    rho_t = exp(logp_t - old_logp_t)
    l_t   = -min(rho_t * A_i, clip(rho_t, 1 - eps_low, 1 + eps_high) * A_i) + beta * KL_t
    KL_t  = exp(ref_t - logp_t) - (ref_t - logp_t) - 1      (k3 estimator, always >= 0)

``eps_high > eps_low`` is DAPO's clip-higher (0.2 / 0.28). The ratio and the surrogate are
variants kept as data in :mod:`grpo_cli.algo.policy_losses`: ``settings.ratio_level``
(``token``, or GSPO's ``sequence``) and ``settings.policy_loss`` (this ``clip``, with
INTELLECT-2's ``delta`` cap, CISPO's ``cispo`` or SAPO's soft gate ``sapo``); the KL term,
the sampler weight and the aggregation are the same for all of them.

Sampler correction: given ``sampler_logp`` (the log-probs of weights that sampled the tokens
and differ from the trained ones), each token's policy-gradient term is multiplied by
``w_t = min(exp(old_logp_t - sampler_logp_t), is_cap)``; the KL term is not weighted. When a
rollout has them and why: README, "Merged decoding and the sampler correction".

Padding: every difference of log-probs is masked to 0 *before* it is exponentiated, so a
large gap at a padded position (garbage log-probs there) can never give ``inf * 0 = NaN``.

Why the logged loss sits near 0 while the model still learns: with one optimisation pass
over fresh rollouts, ``old_logp = logp.detach()``, so ``rho = 1`` and the policy term is
``-A_i`` per token. Advantages are mean-zero within a group, so the loss value averages to
~0 (exactly 0 under ``seq_mean_token_mean`` with equal-length sequences). Its gradient is
*not* 0: ``d l_t / d logp_t = -A_i * rho_t = -A_i``, the REINFORCE gradient. Watch
rewards, not the loss.

Aggregation over tokens (:data:`AGGREGATIONS`), with ``N`` sequences:
    - ``seq_mean_token_mean`` (GRPO): ``1/N * sum_i (sum_t l_it m_it / max(sum_t m_it, 1))``.
      A sequence with no completion tokens contributes 0 but still counts in ``N``.
    - ``token_mean`` (DAPO, BNPO): ``sum_it l_it m_it / max(sum_it m_it, 1)``.
    - ``seq_mean_token_sum_norm`` (Dr. GRPO): ``sum_it l_it m_it / (N * max_len)``.

Gradient accumulation: every mode is a sum over sequences/tokens divided by a denominator
that depends on the whole batch (``N`` or the token count). Pass the *optimizer step's*
totals as ``num_seqs`` / ``num_tokens`` when computing a micro-batch's loss; each
micro-batch's loss is then its exact share, and the micro-batch losses (and gradients) sum
to the full-batch loss. Without them, the micro-batch's own sizes are used.

Metrics (:func:`grpo_loss`) are returned as detached *sums* plus a token count, so that the
caller adds them up over micro-batches and divides once, with :func:`combine_metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import torch
from torch import Tensor

from grpo_cli.algo.policy_losses import POLICY_LOSSES, RATIO_LEVELS, SurrogateOptions
from grpo_cli.algo.policy_losses import masked as _masked

__all__ = [
    "AGGREGATIONS",
    "AdaptiveKLController",
    "FixedKLController",
    "LossSettings",
    "aggregate",
    "combine_metrics",
    "grpo_loss",
    "k3_kl",
]


def k3_kl(logp: Tensor, ref_logp: Tensor, on: Tensor | None = None) -> Tensor:
    """Elementwise k3 estimate of KL(policy || ref): ``exp(d) - d - 1`` with ``d = ref - logp``.

    Unbiased for KL when tokens are sampled from the policy, and always >= 0. With ``on``
    (bool ``[N, L]``), ``d`` is 0 (so KL is 0) off the mask, before the exponential.
    """
    delta = _masked(ref_logp - logp, on)  # [N, L]
    return torch.exp(delta) - delta - 1.0  # [N, L]


def _seq_mean_token_mean(
    masked: Tensor, mask: Tensor, max_len: int, num_seqs: int, num_tokens: int | None
) -> Tensor:
    per_seq = masked.sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)  # [N]
    return per_seq.sum() / num_seqs  # []


def _token_mean(
    masked: Tensor, mask: Tensor, max_len: int, num_seqs: int, num_tokens: int | None
) -> Tensor:
    if num_tokens is None:
        return masked.sum() / mask.sum().clamp(min=1)  # []
    return masked.sum() / max(num_tokens, 1)  # []


def _seq_mean_token_sum_norm(
    masked: Tensor, mask: Tensor, max_len: int, num_seqs: int, num_tokens: int | None
) -> Tensor:
    return masked.sum() / (num_seqs * max_len)  # []


AGGREGATIONS: dict[str, Callable[..., Tensor]] = {
    "seq_mean_token_mean": _seq_mean_token_mean,
    "token_mean": _token_mean,
    "seq_mean_token_sum_norm": _seq_mean_token_sum_norm,
}


def aggregate(
    per_token: Tensor,
    mask: Tensor,
    mode: str,
    max_len: int,
    num_seqs: int | None = None,
    num_tokens: int | None = None,
) -> Tensor:
    """Reduce a per-token loss ``[N, L]`` to a scalar with the aggregation ``mode``.

    Args:
        per_token: ``[N, L]`` per-token values.
        mask: ``[N, L]`` completion mask (bool or float, 1 = completion token).
        mode: one of :data:`AGGREGATIONS`.
        max_len: the maximum completion length (used by ``seq_mean_token_sum_norm``).
        num_seqs: total sequences in the optimizer step (default: ``N``). Used by the
            ``seq_mean_*`` modes.
        num_tokens: total completion tokens in the optimizer step (default: ``mask.sum()``).
            Used by ``token_mean``.
    """
    if mode not in AGGREGATIONS:
        allowed = ", ".join(sorted(AGGREGATIONS))
        raise ValueError(f"unknown loss aggregation {mode!r}; allowed: {allowed}")
    mask = mask.to(per_token.dtype)  # [N, L]
    masked = per_token * mask  # [N, L]
    seqs = per_token.shape[0] if num_seqs is None else num_seqs
    return AGGREGATIONS[mode](masked, mask, max_len, seqs, num_tokens)  # []


@dataclass(frozen=True)
class LossSettings:
    """The loss's knobs: plain values (the trainer builds them from ``algo.*`` each step,
    since ``beta`` is the KL controller's current value)."""

    epsilon_low: float  # clip range [1 - epsilon_low, 1 + epsilon_high]
    epsilon_high: float
    beta: float  # KL penalty coefficient (0 when there is no reference)
    loss_agg: str  # one of AGGREGATIONS
    max_completion_length: int  # the ``max_len`` of :func:`aggregate` (Dr. GRPO's normaliser)
    # Cap of the sampler importance weight; None = no correction even with ``sampler_logp``.
    is_cap: float | None = None
    policy_loss: str = "clip"  # one of policy_losses.POLICY_LOSSES
    ratio_level: str = "token"  # one of policy_losses.RATIO_LEVELS
    # INTELLECT-2's cap of the unclipped ratio (binds for A < 0); None = off. ``clip`` only.
    delta: float | None = None
    # SAPO's gate temperatures for A > 0 and A <= 0 (``sapo`` only).
    sapo_tau_pos: float = 1.0
    sapo_tau_neg: float = 1.05
    # Entropy bonus: ``- entropy_coef * H_t`` per token (needs ``entropy`` with its gradient).
    entropy_coef: float = 0.0


def _lookup(table: Mapping[str, Callable], name: str, what: str) -> Callable:
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; allowed: {', '.join(sorted(table))}")
    return table[name]


def grpo_loss(
    logp: Tensor,
    old_logp: Tensor,
    ref_logp: Tensor | None,
    adv: Tensor,
    mask: Tensor,
    settings: LossSettings,
    *,
    num_seqs: int | None = None,
    num_tokens: int | None = None,
    sampler_logp: Tensor | None = None,
    entropy: Tensor | None = None,
    policy_mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """GRPO loss for one (micro-)batch of ``N`` completions of padded length ``L``.

    Args:
        logp: ``[N, L]`` policy log-probs of the completion tokens (with grad).
        old_logp: ``[N, L]`` log-probs under the sampling policy (no grad).
        ref_logp: ``[N, L]`` reference log-probs, or None (then ``settings.beta`` must be 0).
        adv: ``[N]`` advantages, one per completion.
        mask: ``[N, L]`` completion mask (bool or float).
        settings: clip range, ``beta``, aggregation, max completion length, ``is_cap``,
            the surrogate (``policy_loss``, ``delta``, SAPO's temperatures) and the ratio
            level.
        num_seqs, num_tokens: the optimizer step's totals, see :func:`aggregate`.
        sampler_logp: ``[N, L]`` log-probs under the weights that sampled the tokens, when
            those differ from ``old_logp``'s; with ``settings.is_cap`` the per-token loss is
            weighted by ``min(exp(old_logp - sampler_logp), is_cap)``.
        entropy: ``[N, L]`` token entropies of the policy, with their gradient; needed when
            ``settings.entropy_coef > 0``: ``- entropy_coef * H_t`` joins each token's loss
            (an entropy bonus, aggregated like the rest; not part of ``pg_loss``).
        policy_mask: ``[N, L]`` bool, the tokens that keep the policy term (the high-entropy
            ones, :func:`~grpo_cli.algo.policy_losses.high_entropy_mask`); None = all. The
            KL term and the aggregation's token counts are unchanged.

    Returns:
        ``(loss, sums)``: the scalar loss, and detached 0-dim tensors that add up across
        micro-batches: ``pg_loss`` (the policy term of ``loss``, sampler weight included, so
        ``pg_loss == loss`` when ``beta = 0`` and ``entropy_coef = 0``), ``kl_sum``,
        ``clip_low_sum``, ``clip_high_sum``, ``ratio_sum``, ``is_weight_sum``,
        ``sampler_gap_sum`` (``|old_logp - sampler_logp|``; masked sums over tokens) and
        ``num_tokens``. Turn a list of them into logged values with :func:`combine_metrics`.
    """
    eps_low, eps_high, beta = settings.epsilon_low, settings.epsilon_high, settings.beta
    agg, max_len, is_cap = settings.loss_agg, settings.max_completion_length, settings.is_cap
    if ref_logp is None and beta != 0.0:
        raise ValueError(f"beta={beta} needs ref_logp; pass ref_logp or set beta=0")
    coef = settings.entropy_coef
    if entropy is None and coef != 0.0:
        raise ValueError(f"entropy_coef={coef} needs the token entropies; pass entropy")
    on = mask.bool()  # [N, L]
    mask_f = mask.to(logp.dtype)  # [N, L]
    adv = adv.to(logp.dtype).unsqueeze(1)  # [N, 1]
    log_ratio = _lookup(RATIO_LEVELS, settings.ratio_level, "ratio level")(
        logp, old_logp, on)  # [N, L]
    opts = SurrogateOptions(eps_low, eps_high, settings.delta, settings.sapo_tau_pos,
                            settings.sapo_tau_neg)
    term = _lookup(POLICY_LOSSES, settings.policy_loss, "policy loss")(
        logp, log_ratio, adv, on, opts)
    ratio, pg_per_token = term.ratio, term.per_token  # [N, L] each
    if policy_mask is not None:
        pg_per_token = torch.where(policy_mask, pg_per_token,
                                   torch.zeros_like(pg_per_token))  # [N, L]
    gap = (_masked(old_logp - sampler_logp, on).detach()
           if sampler_logp is not None else None)  # [N, L]
    weight = None
    if gap is not None and is_cap is not None:
        weight = torch.exp(gap).clamp(max=is_cap)  # [N, L]
        pg_per_token = pg_per_token * weight  # [N, L]
    per_token = pg_per_token  # [N, L]
    if ref_logp is not None:
        kl = k3_kl(logp, ref_logp, on)  # [N, L]
        per_token = per_token + beta * kl  # [N, L]
    else:
        kl = torch.zeros_like(logp)  # [N, L]
    if coef != 0.0:
        per_token = per_token - coef * _masked(entropy, on)  # [N, L]
    loss = aggregate(per_token, mask, agg, max_len, num_seqs, num_tokens)  # []

    with torch.no_grad():
        pg_loss = aggregate(pg_per_token, mask, agg, max_len, num_seqs, num_tokens)  # []
        clip_low, clip_high = term.clip_low, term.clip_high  # [N, L] bool each
        sums = {
            "pg_loss": pg_loss.detach(),
            "kl_sum": (kl * mask_f).sum().detach(),
            "clip_low_sum": (clip_low.to(mask_f.dtype) * mask_f).sum(),
            "clip_high_sum": (clip_high.to(mask_f.dtype) * mask_f).sum(),
            "ratio_sum": (ratio * mask_f).sum().detach(),
            "is_weight_sum": (weight * mask_f).sum() if weight is not None else mask_f.sum(),
            "sampler_gap_sum": ((gap.abs() * mask_f).sum() if gap is not None
                                else mask_f.new_zeros(())),
            "num_tokens": mask_f.sum(),
        }
    return loss, sums


def combine_metrics(parts: Iterable[Mapping[str, Tensor]],
                    num_updates: int = 1) -> dict[str, float]:
    """Add up :func:`grpo_loss` sums over a step's micro-batches into logged means.

    ``parts`` are the sums of every micro-batch of the step's ``num_updates`` optimizer
    updates (mini-batches x iterations). Returns ``kl``, ``clip_ratio``, ``clip_ratio/low``,
    ``clip_ratio/high``, ``ratio_mean``, ``sampler/is_weight``, ``sampler/logp_gap`` (masked
    token means over all of them) and ``pg_loss``: the micro-batch shares of one update add
    up to that update's full-batch value (when its ``num_seqs``/``num_tokens`` were passed),
    and the updates are averaged, like the logged ``loss``. When no token counted (every
    completion masked) the token means are left out: nothing was measured, and 0 would read
    as a measurement.
    """
    keys = ("pg_loss", "kl_sum", "clip_low_sum", "clip_high_sum", "ratio_sum",
            "is_weight_sum", "sampler_gap_sum", "num_tokens")
    total = dict.fromkeys(keys, 0.0)
    for part in parts:
        for key in keys:
            total[key] += float(part[key])
    pg_loss = total["pg_loss"] / max(num_updates, 1)
    tokens = total["num_tokens"]
    if tokens <= 0:
        return {"pg_loss": pg_loss}
    low, high = total["clip_low_sum"] / tokens, total["clip_high_sum"] / tokens
    return {
        "pg_loss": pg_loss,
        "kl": total["kl_sum"] / tokens,
        "clip_ratio": low + high,  # low and high clipping are disjoint
        "clip_ratio/low": low,
        "clip_ratio/high": high,
        "ratio_mean": total["ratio_sum"] / tokens,
        "sampler/is_weight": total["is_weight_sum"] / tokens,
        "sampler/logp_gap": total["sampler_gap_sum"] / tokens,
    }


class FixedKLController:
    """Constant KL coefficient, with the :class:`AdaptiveKLController` interface."""

    def __init__(self, init_beta: float) -> None:
        self.beta = float(init_beta)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.beta

    def state_dict(self) -> dict[str, float]:
        return {"beta": self.beta}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.beta = float(state["beta"])


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019, PPO-style).

    ``err = clip(current_kl / target_kl - 1, -0.2, 0.2)``;
    ``beta <- beta * (1 + err * n_steps / horizon)``. KL above target raises beta.
    """

    def __init__(self, init_beta: float, target_kl: float, horizon: int) -> None:
        if target_kl <= 0 or horizon <= 0:
            raise ValueError(
                f"target_kl and horizon must be > 0, got target_kl={target_kl}, horizon={horizon}"
            )
        self.beta = float(init_beta)
        self.target_kl = float(target_kl)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        err = min(max(current_kl / self.target_kl - 1.0, -0.2), 0.2)
        self.beta *= 1.0 + err * n_steps / self.horizon
        return self.beta

    def state_dict(self) -> dict[str, float]:
        return {"beta": self.beta}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.beta = float(state["beta"])

"""The policy-gradient term of the loss, per token: importance ratios and surrogates as data.

Two small registries of pure functions, each keyed by a config value (``algo.ratio_level``,
``algo.policy_loss``), so that a variant is one dict entry and never a branch in the step:

:data:`RATIO_LEVELS` turn ``logp`` and ``old_logp`` (``[N, L]``) into the per-token log of the
importance ratio, masked to 0 on padding (before anything is exponentiated):
    - ``token`` (GRPO, PPO): ``log rho_t = logp_t - old_logp_t``.
    - ``sequence`` (GSPO, Zheng et al. 2025, arXiv 2507.18071, "GSPO-token"):
      ``log s_i = 1/|y_i| * sum_t (logp_t - old_logp_t)`` and per token
      ``s_it = sg(s_i) * pi(y_t) / sg(pi(y_t))``: its value is ``s_i`` on every token of
      sequence ``i``, its gradient ``s_i * d logp_t``. With one advantage per sequence and
      ``seq_mean_token_mean`` aggregation this is exactly GSPO's sequence objective and its
      gradient ``s_i * A_i * 1/|y_i| * sum_t d logp_t``; a sequence whose ``s_i`` is clipped
      gives no token a gradient.

:data:`POLICY_LOSSES` turn that log-ratio and the advantage into the per-token loss:
    - ``clip`` (PPO / GRPO, optionally INTELLECT-2's two-sided clipping):
      ``l_t = -min(min(rho_t, delta) * A, clip(rho_t, 1 - eps_low, 1 + eps_high) * A)``;
      ``delta = None`` is plain PPO. With ``delta > 1 + eps_high`` the cap only binds when
      ``A < 0``: a negative-advantage token whose ratio has run away can no longer give an
      unbounded loss and gradient (INTELLECT-2, Prime Intellect 2025, arXiv 2505.07291).
    - ``cispo`` (MiniMax-M1, arXiv 2506.13585):
      ``l_t = -sg(clip(rho_t, 1 - eps_low, 1 + eps_high)) * A * logp_t``: the importance
      *weight* is clipped and detached, and every token keeps the gradient
      ``-w_t * A * d logp_t`` (PPO's min drops the gradient of clipped tokens). The paper
      sets no lower bound (``eps_low = 1``: floor 0) and tunes only ``eps_high``.
    - ``sapo`` (SAPO, Qwen 2025, arXiv 2511.20347): a soft gate instead of the clip,
      ``l_t = -f(rho_t) * A`` with ``f(r) = sigmoid(tau * (r - 1)) * 4 / tau`` and
      ``tau = tau_pos`` if ``A > 0`` else ``tau_neg``. ``d f / d r = 4 sigma (1 - sigma)`` is 1
      at ``r = 1`` (the gradient is GRPO's on-policy) and decays smoothly as ``r`` leaves 1,
      faster for larger ``tau``; the value at ``r = 1`` is ``2 / tau``, so the on-policy loss
      is ``-2 A / tau`` per token, not ``-A``. Nothing is clipped: its clip flags are all False.

Each surrogate takes :class:`SurrogateOptions` (the clip range, ``delta``, SAPO's
temperatures; each reads its own) and says which tokens its clipping acted on
(``clip_low`` / ``clip_high``, disjoint), for the logged clip ratios.

High-entropy tokens (Wang et al. 2025, "Beyond the 80/20 Rule", arXiv 2506.01939; TRL's
``top_entropy_quantile``): the policy term is kept only on the tokens whose entropy is in the
top ``q`` of the batch's completion tokens, ``H_t >= quantile(H, 1 - q)`` (linear
interpolation, ties kept): :func:`entropy_threshold`, :func:`high_entropy_mask`. The KL term
and the aggregation's denominators still count every token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

__all__ = ["POLICY_LOSSES", "RATIO_LEVELS", "PolicyTerm", "SurrogateOptions",
           "entropy_threshold", "high_entropy_mask", "masked"]


def masked(diff: Tensor, on: Tensor | None) -> Tensor:
    """``diff`` with padded positions set to 0 (where, not multiply: no NaN gets through)."""
    return diff if on is None else torch.where(on, diff, torch.zeros_like(diff))


def token_log_ratio(logp: Tensor, old_logp: Tensor, on: Tensor) -> Tensor:
    """``log rho_t = logp_t - old_logp_t`` (0 on padding)."""
    return masked(logp - old_logp, on)  # [N, L]


def sequence_log_ratio(logp: Tensor, old_logp: Tensor, on: Tensor) -> Tensor:
    """GSPO-token: ``sg(log s_i) + logp_t - sg(logp_t)`` with ``log s_i`` the mean over the
    sequence's completion tokens of ``logp - old_logp`` (0 on padding and for an empty
    sequence). Only whole sequences enter it, so micro-batches stay exact."""
    diff = masked(logp - old_logp, on).detach()  # [N, L]
    seq = diff.sum(dim=-1, keepdim=True) / on.sum(dim=-1, keepdim=True).clamp(min=1)  # [N, 1]
    return seq + masked(logp - logp.detach(), on)  # [N, L], value seq, gradient d logp


RATIO_LEVELS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "token": token_log_ratio,
    "sequence": sequence_log_ratio,
}


@dataclass(frozen=True)
class PolicyTerm:
    """What a surrogate gives back for one micro-batch."""

    per_token: Tensor  # [N, L] loss per token (any value on padding: the aggregation masks it)
    ratio: Tensor  # [N, L] the importance ratio (rho_t, or s_i on every token of i)
    clip_low: Tensor  # [N, L] bool: the lower clip acted on the token
    clip_high: Tensor  # [N, L] bool: the upper clip acted on the token


@dataclass(frozen=True)
class SurrogateOptions:
    """The surrogates' knobs (each surrogate reads the ones it needs)."""

    eps_low: float  # clip range [1 - eps_low, 1 + eps_high] (clip, cispo)
    eps_high: float
    delta: float | None = None  # INTELLECT-2's cap of the unclipped ratio (clip only)
    tau_pos: float = 1.0  # SAPO's gate temperature for A > 0
    tau_neg: float = 1.05  # and for A <= 0


def clip_loss(logp: Tensor, log_ratio: Tensor, adv: Tensor, on: Tensor,
              opts: SurrogateOptions) -> PolicyTerm:
    """PPO's clipped surrogate, with INTELLECT-2's cap ``delta`` on the unclipped ratio."""
    eps_low, eps_high, delta = opts.eps_low, opts.eps_high, opts.delta
    ratio = torch.exp(log_ratio)  # [N, L]
    unclipped = ratio if delta is None else ratio.clamp(max=delta)  # [N, L]
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)  # [N, L]
    per_token = -torch.min(unclipped * adv, clipped * adv)  # [N, L]
    # Clipping changes the objective only where the clipped term is the min.
    low = (ratio < 1.0 - eps_low) & (adv < 0)  # [N, L]
    high = (ratio > 1.0 + eps_high) & (adv > 0)  # [N, L]
    return PolicyTerm(per_token, ratio.detach(), low, high)


def cispo_loss(logp: Tensor, log_ratio: Tensor, adv: Tensor, on: Tensor,
               opts: SurrogateOptions) -> PolicyTerm:
    """CISPO: ``-sg(clip(rho, 1 - eps_low, 1 + eps_high)) * A * logp`` (``delta`` unused: the
    config refuses it)."""
    eps_low, eps_high = opts.eps_low, opts.eps_high
    ratio = torch.exp(log_ratio).detach()  # [N, L]
    weight = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)  # [N, L], no gradient
    per_token = -weight * adv * masked(logp, on)  # [N, L]
    return PolicyTerm(per_token, ratio, ratio < 1.0 - eps_low, ratio > 1.0 + eps_high)


def sapo_loss(logp: Tensor, log_ratio: Tensor, adv: Tensor, on: Tensor,
              opts: SurrogateOptions) -> PolicyTerm:
    """SAPO: ``-sigmoid(tau * (rho - 1)) * 4 / tau * A``, ``tau`` by the advantage's sign (the
    clip range and ``delta`` unused; nothing is clipped)."""
    ratio = torch.exp(log_ratio)  # [N, L]
    tau = torch.where(adv > 0, adv.new_tensor(opts.tau_pos),
                      adv.new_tensor(opts.tau_neg))  # [N, 1], in the loss's dtype
    gate = torch.sigmoid(tau * (ratio - 1.0)) * 4.0 / tau  # [N, L]
    none = torch.zeros_like(ratio, dtype=torch.bool)  # [N, L]
    return PolicyTerm(-gate * adv, ratio.detach(), none, none)


POLICY_LOSSES: dict[str, Callable[[Tensor, Tensor, Tensor, Tensor, SurrogateOptions],
                                  PolicyTerm]] = {
    "clip": clip_loss,
    "cispo": cispo_loss,
    "sapo": sapo_loss,
}


def entropy_threshold(entropies: Tensor, quantile: float) -> float:
    """The entropy above which the top ``quantile`` of ``entropies`` (1-D, the completion
    tokens of a whole optimizer step) lie: ``torch.quantile(entropies, 1 - quantile)``;
    +inf when there are none (no token is kept)."""
    if entropies.numel() == 0:
        return float("inf")
    return float(torch.quantile(entropies.double(), 1.0 - quantile))


def high_entropy_mask(entropy: Tensor, on: Tensor, threshold: float) -> Tensor:
    """Bool ``[N, L]``: completion tokens (``on``) whose entropy is at least ``threshold``."""
    return (entropy >= threshold) & on.bool()  # [N, L]

"""Group-relative advantages for GRPO: pure tensor math, no config objects, no I/O.

Rewards arrive flat, ``[B*G]``, grouped contiguously: rows ``g*G .. g*G+G-1`` are the G
completions of prompt ``g``. Every token of completion ``i`` later receives the same
advantage ``A_i`` (outcome supervision).

An advantage is ``(r_i - b_i) / s_i`` with a *baseline* ``b_i`` and a *scale* ``s_i``:

Baselines (``baseline=``):
    - ``mean``: the group mean, ``b_i = mean_j r_j`` (GRPO).
    - ``rloo``: leave-one-out, ``b_i = mean_{j != i} r_j = (sum_j r_j - r_i) / (G - 1)``
      (RLOO). Needs ``G >= 2``. Note ``r_i - b_i = G / (G - 1) * (r_i - mean_j r_j)``.

Scales (``scale=``):
    - ``group``: ``s_i = std(group of i) + eps`` (GRPO).
    - ``batch``: ``s_i = std(all B*G rewards) + eps``.
    - ``none``:  ``s_i = 1`` (Dr. GRPO, DeepSeek-R1 style).

The std is the *unbiased* sample std (``torch.std`` default, divisor ``n - 1``), as in TRL.

A group whose rewards are all equal teaches nothing: its advantages are set to exactly 0
(not merely ~0 from floating-point cancellation), whatever the baseline and scale. Its share
of the batch, :func:`frac_zero_std`, is the first number to watch during training.

Variants are data: :data:`BASELINES` and :data:`SCALES` map a name to a function, so adding a
variant is one dict entry, not another branch.

Several rewards: the advantage is normally computed from the weighted sum ``r_i = sum_k w_k
r_ik`` (``sum_then_normalize``). GDPO (Liu et al. 2026, arXiv 2601.05242) normalises each
component within its group first and sums those, :func:`decoupled_rewards`
(``normalize_then_sum``): ``r'_i = sum_k w_k (r_ik - mean_g r_k) / (std_g r_k + eps)``, so
that distinct reward combinations no longer collapse onto one advantage; the paper then
normalises ``r'`` over the batch (``scale='batch'``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = [
    "BASELINES",
    "REWARD_AGGREGATIONS",
    "SCALES",
    "compute_advantages",
    "decoupled_rewards",
    "frac_zero_std",
    "zero_std_mask",
]


def _grouped(rewards: Tensor, num_generations: int) -> Tensor:
    """View flat rewards ``[B*G]`` as ``[B, G]``, checking the shape."""
    if num_generations < 1:
        raise ValueError(f"num_generations must be >= 1, got {num_generations}")
    if rewards.dim() != 1 or rewards.numel() % num_generations != 0:
        raise ValueError(
            f"rewards must be a 1-D tensor whose length is a multiple of num_generations="
            f"{num_generations}, got shape {tuple(rewards.shape)}"
        )
    return rewards.view(-1, num_generations)  # [B, G]


def _count(valid: Tensor) -> Tensor:
    """Scored completions per group, ``[B, 1]``."""
    return valid.sum(dim=1, keepdim=True)  # [B, 1]


def _mean_baseline(grouped: Tensor, valid: Tensor) -> Tensor:
    """``b_i = mean_j r_j`` over the group's scored completions."""
    mean = (grouped * valid).sum(dim=1, keepdim=True) / _count(valid).clamp(min=1)  # [B, 1]
    return mean.expand_as(grouped)  # [B, G]


def _rloo_baseline(grouped: Tensor, valid: Tensor) -> Tensor:
    """``b_i = mean_{j != i} r_j``: the mean of the group's other scored rewards."""
    if grouped.shape[1] < 2:
        raise ValueError("baseline='rloo' needs num_generations >= 2")
    total = (grouped * valid).sum(dim=1, keepdim=True)  # [B, 1]
    return (total - grouped * valid) / (_count(valid) - valid).clamp(min=1)  # [B, G]


def _std(grouped: Tensor, valid: Tensor, dim: int | None) -> Tensor:
    """Unbiased std (divisor n - 1) of the scored rewards, over ``dim`` (None = all)."""
    keep = dim is not None
    dims = (dim,) if keep else tuple(range(grouped.dim()))
    n = valid.sum(dim=dims, keepdim=keep)  # [B, 1] or []
    mean = (grouped * valid).sum(dim=dims, keepdim=keep) / n.clamp(min=1)
    var = ((grouped - mean) ** 2 * valid).sum(dim=dims, keepdim=keep) / (n - 1).clamp(min=1)
    return var.sqrt()


def _group_scale(grouped: Tensor, valid: Tensor, eps: float) -> Tensor:
    """``s_i = std(group) + eps`` (groups of fewer than 2 are zeroed later)."""
    return (_std(grouped, valid, dim=1) + eps).expand_as(grouped)  # [B, G]


def _batch_scale(grouped: Tensor, valid: Tensor, eps: float) -> Tensor:
    """``s_i = std(all scored rewards) + eps``."""
    return (_std(grouped, valid, dim=None) + eps).expand_as(grouped)  # [B, G]


def _no_scale(grouped: Tensor, valid: Tensor, eps: float) -> Tensor:
    """``s_i = 1``."""
    return torch.ones_like(grouped)  # [B, G]


BASELINES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mean": _mean_baseline,
    "rloo": _rloo_baseline,
}

SCALES: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "group": _group_scale,
    "batch": _batch_scale,
    "none": _no_scale,
}


def _lookup(table: dict, name: str, what: str) -> Callable:
    if name not in table:
        allowed = ", ".join(sorted(table))
        raise ValueError(f"unknown advantage {what} {name!r}; allowed: {allowed}")
    return table[name]


def zero_std_mask(rewards: Tensor, num_generations: int, valid: Tensor | None = None) -> Tensor:
    """Bool ``[B]``: True for groups that teach nothing: their scored rewards are all exactly
    equal, or fewer than two of their completions were scored (``valid``, ``[B*G]`` bool)."""
    grouped = _grouped(rewards, num_generations)  # [B, G]
    if valid is None:
        return grouped.amax(dim=1) == grouped.amin(dim=1)  # [B]
    v = valid.view_as(grouped)  # [B, G]
    hi = torch.where(v, grouped, torch.full_like(grouped, -torch.inf)).amax(dim=1)  # [B]
    lo = torch.where(v, grouped, torch.full_like(grouped, torch.inf)).amin(dim=1)  # [B]
    return (hi == lo) | (v.sum(dim=1) < 2)  # [B]


def frac_zero_std(rewards: Tensor, num_generations: int, valid: Tensor | None = None) -> float:
    """Share of groups (prompts) that teach nothing (see :func:`zero_std_mask`), in [0, 1]."""
    return zero_std_mask(rewards, num_generations, valid).float().mean().item()


def compute_advantages(
    rewards: Tensor,
    num_generations: int,
    scale: str = "group",
    baseline: str = "mean",
    eps: float = 1e-4,
    valid: Tensor | None = None,
) -> Tensor:
    """Advantages ``A = (r - baseline) / scale`` for flat, contiguously grouped rewards.

    Args:
        rewards: ``[B*G]`` float rewards, rows ``g*G .. g*G+G-1`` form prompt ``g``'s group.
        num_generations: G, the group size.
        scale: one of :data:`SCALES` (``group``, ``batch``, ``none``).
        baseline: one of :data:`BASELINES` (``mean``, ``rloo``).
        eps: added to the std before dividing.
        valid: ``[B*G]`` bool, False for a completion no reward could score (every component
            raised or timed out). It is left out of its group's baseline and std and gets
            advantage 0: a reward it never earned must not push it down. None = all valid.

    Returns:
        ``[B*G]`` advantages, exactly 0 for every zero-variance group and unscored completion.

    Raises:
        ValueError: unknown ``scale``/``baseline`` (names the allowed values), bad shape,
            or ``rloo`` with ``G < 2``.
    """
    baseline_fn = _lookup(BASELINES, baseline, "baseline")
    scale_fn = _lookup(SCALES, scale, "scale")
    grouped = _grouped(rewards, num_generations).float()  # [B, G]
    ok = (torch.ones_like(grouped, dtype=torch.bool) if valid is None
          else valid.view_as(grouped).bool())  # [B, G]
    v = ok.float()  # [B, G]
    adv = (grouped - baseline_fn(grouped, v)) / scale_fn(grouped, v, eps)  # [B, G]
    teaches = ~zero_std_mask(rewards, num_generations, ok.reshape(-1))  # [B]
    adv = torch.where(teaches.unsqueeze(1) & ok, adv, torch.zeros_like(adv))  # [B, G]
    return adv.reshape(-1)  # [B*G]


def decoupled_rewards(components: Tensor, weights: Tensor, num_generations: int,
                      eps: float = 1e-4, valid: Tensor | None = None) -> Tensor:
    """GDPO's reward before its advantage: each component normalised within its group, then
    weighted and summed.

    Args:
        components: ``[B*G, K]`` rewards per component, NaN where one does not apply (left out
            of that component's group mean and std; it contributes 0 to that sample).
        weights: ``[K]`` the components' weights.
        num_generations, eps, valid: as in :func:`compute_advantages`.

    Returns:
        ``[B*G]``: ``sum_k w_k * compute_advantages(r_k, G, 'group', 'mean', eps, applicable)``;
        a component that is constant within a group adds exactly 0 there.
    """
    out = torch.zeros(components.shape[0])  # [B*G]
    for k in range(components.shape[1]):
        r = components[:, k].float()  # [B*G]
        ok = ~torch.isnan(r) if valid is None else ~torch.isnan(r) & valid.bool()  # [B*G]
        norm = compute_advantages(torch.nan_to_num(r), num_generations, scale="group",
                                  baseline="mean", eps=eps, valid=ok)  # [B*G]
        out = out + float(weights[k]) * norm  # [B*G]
    return out


def _weighted_sum(total: Tensor, components: Tensor, weights: Tensor, num_generations: int,
                  eps: float, valid: Tensor | None) -> Tensor:
    """``sum_then_normalize``: the stack's weighted total, as it is."""
    return total  # [B*G]


def _normalized_sum(total: Tensor, components: Tensor, weights: Tensor, num_generations: int,
                    eps: float, valid: Tensor | None) -> Tensor:
    """``normalize_then_sum``: GDPO, :func:`decoupled_rewards`."""
    return decoupled_rewards(components, weights, num_generations, eps, valid)  # [B*G]


# reward.aggregation -> the [B*G] reward the advantage is taken from, given the weighted
# total [B*G], the components [B*G, K] (NaN = not applicable) and their weights [K].
REWARD_AGGREGATIONS: dict[str, Callable[..., Tensor]] = {
    "sum_then_normalize": _weighted_sum,
    "normalize_then_sum": _normalized_sum,
}

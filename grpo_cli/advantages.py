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
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = [
    "BASELINES",
    "SCALES",
    "compute_advantages",
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


def _mean_baseline(grouped: Tensor) -> Tensor:
    """``b_i = mean_j r_j`` over the group."""
    return grouped.mean(dim=1, keepdim=True).expand_as(grouped)  # [B, G]


def _rloo_baseline(grouped: Tensor) -> Tensor:
    """``b_i = mean_{j != i} r_j``: the mean of the other G-1 rewards."""
    num_generations = grouped.shape[1]
    if num_generations < 2:
        raise ValueError("baseline='rloo' needs num_generations >= 2")
    total = grouped.sum(dim=1, keepdim=True)  # [B, 1]
    return (total - grouped) / (num_generations - 1)  # [B, G]


def _group_scale(grouped: Tensor, eps: float) -> Tensor:
    """``s_i = std(group) + eps`` (unbiased std; G=1 groups are zeroed later, use 1)."""
    if grouped.shape[1] < 2:
        return torch.ones_like(grouped)  # [B, G]
    return (grouped.std(dim=1, keepdim=True) + eps).expand_as(grouped)  # [B, G]


def _batch_scale(grouped: Tensor, eps: float) -> Tensor:
    """``s_i = std(all rewards) + eps`` (unbiased std; one reward is zeroed later, use 1)."""
    if grouped.numel() < 2:
        return torch.ones_like(grouped)  # [B, G]
    return (grouped.std() + eps).expand_as(grouped)  # [B, G]


def _no_scale(grouped: Tensor, eps: float) -> Tensor:
    """``s_i = 1``."""
    return torch.ones_like(grouped)  # [B, G]


BASELINES: dict[str, Callable[[Tensor], Tensor]] = {
    "mean": _mean_baseline,
    "rloo": _rloo_baseline,
}

SCALES: dict[str, Callable[[Tensor, float], Tensor]] = {
    "group": _group_scale,
    "batch": _batch_scale,
    "none": _no_scale,
}


def _lookup(table: dict, name: str, what: str) -> Callable:
    if name not in table:
        allowed = ", ".join(sorted(table))
        raise ValueError(f"unknown advantage {what} {name!r}; allowed: {allowed}")
    return table[name]


def zero_std_mask(rewards: Tensor, num_generations: int) -> Tensor:
    """Bool ``[B]``: True for groups whose G rewards are all exactly equal."""
    grouped = _grouped(rewards, num_generations)  # [B, G]
    return grouped.amax(dim=1) == grouped.amin(dim=1)  # [B]


def frac_zero_std(rewards: Tensor, num_generations: int) -> float:
    """Share of groups (prompts) whose rewards are all equal, in [0, 1]."""
    return zero_std_mask(rewards, num_generations).float().mean().item()


def compute_advantages(
    rewards: Tensor,
    num_generations: int,
    scale: str = "group",
    baseline: str = "mean",
    eps: float = 1e-4,
) -> Tensor:
    """Advantages ``A = (r - baseline) / scale`` for flat, contiguously grouped rewards.

    Args:
        rewards: ``[B*G]`` float rewards, rows ``g*G .. g*G+G-1`` form prompt ``g``'s group.
        num_generations: G, the group size.
        scale: one of :data:`SCALES` (``group``, ``batch``, ``none``).
        baseline: one of :data:`BASELINES` (``mean``, ``rloo``).
        eps: added to the std before dividing.

    Returns:
        ``[B*G]`` advantages, exactly 0 for every zero-variance group.

    Raises:
        ValueError: unknown ``scale``/``baseline`` (names the allowed values), bad shape,
            or ``rloo`` with ``G < 2``.
    """
    baseline_fn = _lookup(BASELINES, baseline, "baseline")
    scale_fn = _lookup(SCALES, scale, "scale")
    grouped = _grouped(rewards, num_generations).float()  # [B, G]
    adv = (grouped - baseline_fn(grouped)) / scale_fn(grouped, eps)  # [B, G]
    flat_groups = zero_std_mask(rewards, num_generations)  # [B]
    adv = torch.where(flat_groups.unsqueeze(1), torch.zeros_like(adv), adv)  # [B, G]
    return adv.reshape(-1)  # [B*G]

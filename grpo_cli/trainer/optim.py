"""Optimizer and learning-rate schedule, built from `OptimConfig`.

The schedule advances once per training step (one batch of rollouts), so `trainer.max_steps`
is its horizon whatever the number of optimizer steps per batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from grpo_cli.config.schema import OptimConfig
from grpo_cli.errors import UserError


def _adamw(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                             weight_decay=cfg.weight_decay)


def _bnb(name: str) -> Callable:
    def build(params, cfg: OptimConfig) -> torch.optim.Optimizer:
        import bitsandbytes as bnb

        cls = getattr(bnb.optim, name)
        return cls(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                   weight_decay=cfg.weight_decay)
    return build


OPTIMIZERS: dict[str, Callable] = {
    "adamw": _adamw,
    "adamw_8bit": _bnb("AdamW8bit"),
    "paged_adamw_8bit": _bnb("PagedAdamW8bit"),
}


def _constant(step: int, total: int) -> float:
    return 1.0


def _linear(step: int, total: int) -> float:
    return max(0.0, 1.0 - step / max(1, total))


def _cosine(step: int, total: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / max(1, total))))


SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "constant": _constant, "linear": _linear, "cosine": _cosine}


def lr_factor(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """Multiplier of optim.lr after `step` scheduler steps: linear warmup, then the decay."""
    if step < cfg.warmup_steps:
        return (step + 1) / (cfg.warmup_steps + 1)
    decay_steps = max(1, max_steps - cfg.warmup_steps)
    return SCHEDULES[cfg.scheduler](step - cfg.warmup_steps, decay_steps)


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig, max_steps: int,
                    device: torch.device):
    params = [p for p in params if p.requires_grad]
    if not params:
        raise UserError("the model has no trainable parameters (model.lora.enabled and "
                        "model.lora.target_modules decide what trains)")
    if cfg.name != "adamw" and device.type != "cuda":
        raise UserError(f"optim.name={cfg.name} needs a CUDA GPU (bitsandbytes optimizers); "
                        "use optim=adamw on CPU")
    optimizer = OPTIMIZERS[cfg.name](params, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg, max_steps))
    return optimizer, scheduler

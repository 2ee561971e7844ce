"""A tiny LoRA policy whose adapter matters (LoRA initialises B = 0, a no-op adapter)."""

from __future__ import annotations

import torch

from grpo_cli.config.schema import LoraConfig, ModelConfig
from grpo_cli.policy.model import build_policy


def perturb_lora_b(model: torch.nn.Module, std: float = 0.2, seed: int = 1) -> None:
    """Fill every LoRA B with N(0, std) so that the adapter changes the outputs."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, std)


def lora_policy(path, quantization: str = "none", r: int = 8, std: float = 0.2,
                need_reference: bool = True, init_seed: int = 0):
    """build_policy on `path` in fp32 with LoRA r (alpha 2r), B perturbed, in eval mode."""
    cfg = ModelConfig(name_or_path=str(path), quantization=quantization, dtype="fp32",
                      lora=LoraConfig(r=r, alpha=2.0 * r))
    torch.manual_seed(init_seed)  # the same LoRA A initialisation on every call
    policy = build_policy(cfg, need_reference=need_reference)
    perturb_lora_b(policy.model, std)
    policy.model.eval()
    return policy

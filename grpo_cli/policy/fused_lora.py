"""A leaner forward for plain LoRA linear layers: the same function, fewer full-size ops.

peft computes ``base(x) + lora_B(lora_A(x)) * s``: the scaling multiplies, and the sum adds,
whole ``[tokens, out]`` tensors in the forward pass and again in the backward pass. Here
``s`` goes into the small ``[out, r]`` matrix instead and the sum into the matrix product::

    y = addmm(base(x), lora_A(x), (s * B)^T)

which is the same value up to float rounding, with the same gradients for A and B (the time
it saves: README, "Speed against TRL"). Only layers with one plain LoRA adapter and no
dropout are changed; adapters switched off (the reference pass, merged decoding) still run
the base layer alone.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn


def _fused_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    active = self.active_adapters
    if (self.disable_adapters or self.merged or len(active) != 1 or active[0] not in self.lora_A
            or "adapter_names" in kwargs):
        return self._plain_forward(x, *args, **kwargs)  # peft's own handling of those states
    name = active[0]
    result = self.base_layer(x, *args, **kwargs)  # [..., out]
    a, b = self.lora_A[name].weight, self.lora_B[name].weight  # [r, in], [out, r]
    h = nn.functional.linear(x.to(a.dtype), a)  # [..., r]
    out_shape = result.shape
    fused = torch.addmm(result.reshape(-1, out_shape[-1]).to(a.dtype),
                        h.reshape(-1, h.shape[-1]), (b * self.scaling[name]).t())
    return fused.view(out_shape).to(result.dtype)  # [..., out]


def is_plain_lora(module: nn.Module, name: str) -> bool:
    """Whether adapter `name` of a LoRA layer is plain LoRA: no DoRA or other variant and no
    LoRA bias (what the fused forward here and merge.py's merged decoding compute)."""
    return (not module.use_dora.get(name) and name not in getattr(module, "lora_variant", {})
            and not getattr(module, "lora_bias", {}).get(name, False))


def fuse_lora_layers(model: nn.Module) -> int:
    """Give every plain LoRA linear layer of `model` the fused forward; returns how many."""
    from peft.tuners.lora import Linear as LoraLinear

    kinds: tuple[type, ...] = (LoraLinear,)
    try:  # the QLoRA / 8-bit layers (defined when bitsandbytes imports)
        from peft.tuners.lora.bnb import Linear4bit, Linear8bitLt
        kinds += (Linear4bit, Linear8bitLt)
    except ImportError:
        pass
    n = 0
    for module in model.modules():
        if not isinstance(module, kinds) or len(module.lora_A) != 1:
            continue
        name = next(iter(module.lora_A))
        if (is_plain_lora(module, name) and isinstance(module.lora_dropout[name], nn.Identity)
                and not getattr(module, "fan_in_fan_out", False)):
            module._plain_forward = module.forward
            module.forward = types.MethodType(_fused_forward, module)
            n += 1
    return n

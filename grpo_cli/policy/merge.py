"""Decoding with the LoRA adapters merged into dense weights (`rollout.merge_adapters`).

A LoRA layer computes ``W x + s * B (A x)``: three matrix products per token, and with a
4-bit base ``W`` is dequantized again at every decode step. The weights do not change during
a rollout, so :func:`merged_for_decoding` builds ``W' = dequant(W) + s * B A`` once per
rollout, in the compute dtype, swaps each LoRA layer's base for a plain ``nn.Linear(W')``
and turns the adapters off: one dense matrix product per layer per token. On the way out
the original base layers come back untouched and ``W'`` is freed. ``mode="auto"`` merges only
when the copy fits (:func:`merge_fits`, which `grpo plan` uses too).

Why, what it costs in memory, how close the sampler stays to the trained policy and how the
loss corrects for the difference (`algo.is_cap`): README, "Merged decoding and the sampler
correction"."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import torch
from torch import nn

from grpo_cli.policy.fused_lora import is_plain_lora

log = logging.getLogger("grpo")

MODES = ("off", "on", "auto")
_MARGIN_BYTES = 1 << 30  # left free for the KV cache and activations, beyond 20% of the copy
_reported: set[str] = set()


def _lora_layers(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(LoRA layer, its one active adapter) for every plain-LoRA linear layer of `model`."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover - peft is a core dependency
        return []
    layers = []
    for module in model.modules():
        if not isinstance(module, LoraLayer) or getattr(module, "disable_adapters", False):
            continue
        active = [a for a in module.active_adapters if a in module.lora_A]
        if len(active) != 1 or module.merged:
            return []  # stacked or already merged adapters: leave the model as it is
        name = active[0]
        if (not isinstance(module.lora_A[name], nn.Linear) or not is_plain_lora(module, name)
                or not hasattr(module.get_base_layer(), "in_features")):
            return []  # DoRA and other variants, embeddings, convolutions: not handled here
        layers.append((module, name))
    return layers


def _dense_weight(base: nn.Module) -> torch.Tensor:
    """The base layer's weight as a dense float tensor ([out, in]), dequantized if needed."""
    weight = base.weight
    kind = type(weight).__name__
    if kind in ("Params4bit", "Int8Params"):
        from peft.utils.integrations import dequantize_bnb_weight

        return dequantize_bnb_weight(weight, state=getattr(base, "state", None))
    return weight.data


def _copy_bytes(layers: list[tuple[nn.Module, str]], dtype: torch.dtype) -> int:
    return sum(m.get_base_layer().in_features * m.get_base_layer().out_features
               for m, _ in layers) * dtype.itemsize


def merged_bytes(model: nn.Module, dtype: torch.dtype) -> int:
    """Bytes of the merged dense copy of every adapted layer."""
    return _copy_bytes(_lora_layers(model), dtype)


def free_bytes(device: torch.device) -> int:
    """Memory that a new allocation on `device` can use now (CUDA: driver free + cached)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 0


def _compute_dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _once(key: str, msg: str, *args: object) -> None:
    if key not in _reported:
        _reported.add(key)
        log.info(msg, *args)


def merge_fits(need: float, have: float) -> bool:
    """Whether `auto` merges: the copy, 20% more and a margin fit in the free memory."""
    return need * 1.2 + _MARGIN_BYTES <= have


def _layers_to_merge(model: nn.Module, mode: str) -> list[tuple[nn.Module, str]]:
    """The layers `merged_for_decoding(model, mode)` merges; empty when it merges none."""
    if mode not in MODES:
        raise ValueError(f"merge mode must be one of {', '.join(MODES)}, got {mode!r}")
    layers = _lora_layers(model) if mode != "off" else []
    if mode != "auto" or not layers:
        return layers
    need = _copy_bytes(layers, _compute_dtype(model))
    have = free_bytes(next(model.parameters()).device)
    if merge_fits(need, have):
        _once("merge", "rollout: decoding with LoRA merged into dense weights "
              "(+%.2f GB while sampling)", need / 2**30)
        return layers
    _once("no-merge", "rollout: LoRA not merged for decoding: the merged copy needs %.2f GB "
          "and %.2f GB is free (rollout.merge_adapters=on forces it)", need / 2**30, have / 2**30)
    return []


def should_merge(model: nn.Module, mode: str) -> bool:
    """Whether `merged_for_decoding(model, mode)` would merge (see the module docstring)."""
    return bool(_layers_to_merge(model, mode))


class MergedLinear(nn.Module):
    """``y = x W'^T + b`` for decoding. On CPU ``W'`` is stored transposed ([in, out],
    contiguous): at decode batch sizes MKL streams that layout faster (README, "Speed against
    TRL"); on GPU it stays [out, in] for cuBLAS."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.transposed = weight.device.type == "cpu"
        self.register_buffer("weight", weight.t().contiguous() if self.transposed else weight,
                             persistent=False)  # [in, out] on CPU, [out, in] elsewhere
        self.bias = bias  # the base layer's own bias, shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.transposed:
            return nn.functional.linear(x, self.weight, self.bias)
        y = torch.matmul(x, self.weight)  # [..., out]
        return y + self.bias if self.bias is not None else y


@contextlib.contextmanager
def merged_for_decoding(model: nn.Module, mode: str) -> Iterator[bool]:
    """Within the block, `model` runs with each LoRA layer merged into a dense linear layer.

    Yields True when it merged, False when it left the model as it is (mode "off", no LoRA,
    an unsupported adapter, or "auto" without the memory). Use under torch.no_grad().
    """
    layers = _layers_to_merge(model, mode)
    if not layers:
        yield False
        return
    dtype = _compute_dtype(model)
    swapped: list[tuple[nn.Module, nn.Module]] = []
    try:
        with torch.no_grad():
            for module, name in layers:
                base = module.get_base_layer()
                dense = _dense_weight(base).to(torch.float32, copy=True)  # [out, in]
                dense += module.get_delta_weight(name).float()
                linear = MergedLinear(dense.to(dtype), base.bias)
                del dense
                swapped.append((module, base))
                module.base_layer = linear
        with model.disable_adapter() if hasattr(model, "disable_adapter") else _adapters_off(
                [m for m, _ in swapped]):
            yield True
    finally:
        for module, base in swapped:
            module.base_layer = base


@contextlib.contextmanager
def _adapters_off(layers: list[nn.Module]) -> Iterator[None]:
    """Adapters off on these LoRA layers (for a model that is not a PeftModel)."""
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)

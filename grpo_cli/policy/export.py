"""`grpo export checkpoint=PATH [out=DIR]`: merge a LoRA checkpoint into a plain HF model.

The output folder loads with nothing but transformers (`AutoModelForCausalLM.from_pretrained`)
and generates like the adapter model did in training.

Which base weights to merge into: the adapter was trained against the base *as the policy saw
it*. For QLoRA that is the NF4/FP4-quantized base, whose dequantized weights differ from the
original bf16 ones by the quantization error (much larger than what LoRA learned in a short
run). So we load the base exactly as in training (same quantization, block size and double
quantization, which are deterministic), dequantize it with bitsandbytes
(`model.dequantize()`, i.e. `dequantize_4bit` per layer) and merge the adapter into those
weights: the export computes what was trained. (peft's `merge_and_unload` on a 4-bit model
would instead re-quantize the merged weights to 4 bits, adding a fresh rounding error.)
With `quantization: none` the plain base is used.

Everything runs on CPU in fp32 (no GPU memory, exact merge), and the result is cast once to
the output dtype `dtype=`: fp32 by default, which is the merge exactly (a bf16 copy rounds
every weight once, and greedy outputs can then differ from base + adapter); bf16 or fp16
halve the size. CPU RAM needed: ~4 bytes per parameter plus the output copy (about 40 GB for
a 7B model in bf16, 56 GB in fp32).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import torch

from grpo_cli.config.schema import ModelConfig
from grpo_cli.errors import UserError
from grpo_cli.policy.model import DTYPES, load_base, quiet_peft

log = logging.getLogger("grpo")

DEFAULT_DTYPE = "fp32"
EXPORT_DTYPES = ("fp32", "bf16", "fp16")


def _dequantize(model: torch.nn.Module) -> torch.nn.Module:
    """Replace bitsandbytes layers by plain nn.Linear holding the dequantized weights."""
    model = model.dequantize()
    for flag in ("is_loaded_in_4bit", "is_loaded_in_8bit", "is_quantized"):
        if isinstance(getattr(type(model), flag, None), property):
            continue
        if hasattr(model, flag):
            setattr(model, flag, False)
    model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    return model


def export_merged(checkpoint_dir: str | Path, out_dir: str | Path, base_cfg: ModelConfig,
                  *, dtype: str = DEFAULT_DTYPE) -> Path:
    """Write base (+ adapter of `checkpoint_dir`, merged) to `out_dir` as a plain HF folder.

    `base_cfg` is the run's `model` config (base model, quantization); `dtype` is the output
    dtype (fp32 / bf16 / fp16).
    """
    from peft import PeftModel
    from transformers import AutoTokenizer

    ckpt, out = Path(checkpoint_dir).expanduser(), Path(out_dir).expanduser()
    if not (ckpt / "adapter_config.json").is_file():
        hint = (": it is a full model already; load it with model.name_or_path"
                if (ckpt / "config.json").is_file() else "")
        raise UserError(f"checkpoint={str(checkpoint_dir)!r} has no adapter_config.json{hint}")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"export folder {str(out)!r} exists and is not empty; choose another")
    name = dtype
    if name not in EXPORT_DTYPES:
        raise UserError(f"dtype={name} is not allowed; choose one of: "
                        + ", ".join(EXPORT_DTYPES))

    cpu = torch.device("cpu")
    tokenizer, model = load_base(base_cfg, cpu, torch.float32, attn_implementation="sdpa")
    if base_cfg.quantization != "none":
        model = _dequantize(model)
    with quiet_peft():
        merged = PeftModel.from_pretrained(model, str(ckpt)).merge_and_unload()
    merged = merged.to(DTYPES[name]).eval()
    if (ckpt / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(ckpt)  # what the run trained with

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.chmod(0o755)
        if out.exists():
            out.rmdir()  # empty (checked above)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s + %s -> %s (%s, merged into the %s base)", base_cfg.name_or_path,
             ckpt, out, name, base_cfg.quantization if base_cfg.quantization != "none"
             else "unquantized")
    return out


def export_checkpoint(checkpoint: Path, out: Optional[Path] = None, *,
                      dtype: str = DEFAULT_DTYPE) -> Path:
    """`grpo export`: merge `<checkpoint>/policy` into the run's base model (its config.yaml).

    `checkpoint` is a run checkpoint (`<run>/checkpoints/<name>`) or its `policy/` folder;
    `out` defaults to `<run>/merged/<name>`; `dtype` is the output dtype (fp32 / bf16 / fp16).
    """
    from omegaconf import OmegaConf

    from grpo_cli.trainer.checkpoint import load_checkpoint_config

    checkpoint = Path(checkpoint).expanduser()
    if checkpoint.name == "policy" and (checkpoint.parent / "config.yaml").is_file():
        checkpoint = checkpoint.parent
    run_cfg = load_checkpoint_config(checkpoint)
    if "model" not in run_cfg:
        raise UserError(f"{checkpoint / 'config.yaml'} has no model section")
    model_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig),
                                                    run_cfg.model))
    if not model_cfg.lora.enabled:
        raise UserError(f"{checkpoint / 'policy'} is a full model already (lora.enabled=false): "
                        "load it directly with transformers or model.name_or_path")
    if out is None:
        out = checkpoint.parent.parent / "merged" / checkpoint.name
    return export_merged(checkpoint / "policy", out, model_cfg, dtype=dtype)

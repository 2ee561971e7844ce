"""`rollout.vllm`: how the vLLM rollout engine (rollout.engine=vllm) is built.

Its own module so that schema.py stays one screen per group; GrpoConfig reaches it as
`rollout.vllm`, read by `grpo train` and `grpo eval` alike. The values go to `vllm.LLM(...)`
once per run (grpo_cli/rollout/vllm.py); the LoRA rank vLLM reserves (`max_lora_rank`) is
not a key: it is derived from model.lora.r (the smallest size vLLM offers that holds it).
"""

from __future__ import annotations

from dataclasses import dataclass

from grpo_cli.config.fields import bounded


@dataclass
class VllmConfig:
    # CUDA: the share of the GPU's memory vLLM takes for its weights and KV cache (the rest
    # stays the trainer's). Small by default: the base model is loaded a second time.
    gpu_memory_utilization: float = bounded(0.3, gt=0, hi=1)
    # CPU: the KV cache size in GiB (vLLM's CPU backend reserves this much RAM).
    cpu_kv_cache_gib: float = bounded(1.0, gt=0)
    # The G samples of a prompt share its prefix in the KV cache (one request with n=G).
    enable_prefix_caching: bool = True
    # CUDA: vLLM's sleep mode, level 1 between rollouts (weights to CPU RAM, KV cache freed),
    # woken before each, so the training pass has the memory it has with the hf engine.
    # Ignored on CPU (vLLM's CPU backend has no sleep mode).
    sleep: bool = True
    # Longest prompt + completion vLLM plans its cache for (null = the model's own limit,
    # capped at 4096).
    max_model_len: int | None = bounded(None, lo=16)
    # Show vLLM's own log lines and progress bars (off: only its errors reach the console).
    log: bool = False

"""The rollout.vllm.* values the user sets are the values vLLM is built with (runs without
vLLM: only the keyword arguments for `vllm.LLM` are computed, no engine is built)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from grpo_cli.config.compose import compose_config
from grpo_cli.rollout.vllm import VllmEngine, VllmOptions


def _kwargs(opts: VllmOptions, device: str) -> dict:
    engine = object.__new__(VllmEngine)  # no vllm.LLM: only the arguments it would get
    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=8192))
    engine.policy = SimpleNamespace(device=torch.device(device), dtype=torch.float32,
                                    model=model)
    engine.opts, engine.seed, engine.on_cuda = opts, 7, device == "cuda"
    return engine._llm_kwargs()


def _options(overrides: list[str]) -> VllmOptions:
    _, cfg = compose_config("train", ["rollout.engine=vllm", *overrides])
    v = cfg.rollout.vllm
    return VllmOptions(model_path="m", max_lora_rank=16, quantization=cfg.model.quantization,
                       gpu_memory_utilization=v.gpu_memory_utilization,
                       cpu_kv_cache_gib=v.cpu_kv_cache_gib,
                       enable_prefix_caching=v.enable_prefix_caching, sleep=v.sleep,
                       max_model_len=v.max_model_len, log=v.log)


def test_cpu_knobs_reach_vllm(monkeypatch):
    from grpo_cli.config import vllm_rules

    monkeypatch.setattr(vllm_rules, "vllm_installed", lambda: True)
    kw = _kwargs(_options(["rollout.vllm.cpu_kv_cache_gib=0.25",
                           "rollout.vllm.enable_prefix_caching=false",
                           "rollout.vllm.max_model_len=1024"]), "cpu")
    assert kw["kv_cache_memory_bytes"] == 2**28
    assert kw["enable_prefix_caching"] is False and kw["max_model_len"] == 1024
    assert kw["enable_chunked_prefill"] is False and kw["seed"] == 7
    assert kw["enable_lora"] is True and kw["max_lora_rank"] == 16
    assert "gpu_memory_utilization" not in kw and "enable_sleep_mode" not in kw
    assert kw["use_tqdm_on_load"] is False  # rollout.vllm.log=false: no load bars


def test_cuda_knobs_reach_vllm(monkeypatch):
    from grpo_cli.config import vllm_rules

    monkeypatch.setattr(vllm_rules, "vllm_installed", lambda: True)
    kw = _kwargs(_options(["rollout.vllm.gpu_memory_utilization=0.45",
                           "rollout.vllm.sleep=false", "model.quantization=nf4"]), "cuda")
    assert kw["gpu_memory_utilization"] == 0.45 and kw["enable_sleep_mode"] is False
    assert kw["quantization"] == "bitsandbytes"
    assert kw["max_model_len"] == 4096  # the model's 8192, capped
    assert "kv_cache_memory_bytes" not in kw

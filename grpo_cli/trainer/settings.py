"""The training config as the values the rollout engine and the loss take.

rollout/ and algo/ take plain settings values and never import a config schema; the trainer
builds those values here, in one place, from the groups that hold them.
"""

from __future__ import annotations

from typing import Any

from grpo_cli.algo.loss import LossSettings
from grpo_cli.config.schema import AlgoConfig, GrpoConfig, RolloutConfig
from grpo_cli.rollout.settings import SamplingSettings


def sampling_settings(rollout: RolloutConfig, num_generations: int) -> SamplingSettings:
    """What a training step samples: `algo.num_generations` completions per prompt, drawn
    as `rollout` says (never greedy: GRPO needs varied groups)."""
    return SamplingSettings(num_samples=num_generations, max_new_tokens=rollout.max_new_tokens,
                            temperature=rollout.temperature, top_p=rollout.top_p,
                            top_k=rollout.top_k, min_new_tokens=rollout.min_new_tokens)


def loss_settings(algo: AlgoConfig, max_completion_length: int, beta: float) -> LossSettings:
    """The loss of a training step: `algo`'s surrogate, ratio level, clip range, delta, SAPO's
    temperatures, entropy bonus, aggregation and importance cap, with `beta` from the KL
    controller (it moves under algo.kl_target; 0 when no reference ran) and
    `rollout.max_new_tokens` as the max completion length."""
    return LossSettings(epsilon_low=algo.epsilon_low, epsilon_high=algo.epsilon_high,
                        beta=beta, loss_agg=algo.loss_agg,
                        max_completion_length=max_completion_length, is_cap=algo.is_cap,
                        policy_loss=algo.policy_loss, ratio_level=algo.ratio_level,
                        delta=algo.delta, sapo_tau_pos=algo.sapo_tau_pos,
                        sapo_tau_neg=algo.sapo_tau_neg, entropy_coef=algo.entropy_coef)


def rollout_engine(cfg: GrpoConfig, policy: Any) -> Any:
    """The engine `rollout.engine` names, built once on `policy` (train and eval alike)."""
    if cfg.rollout.engine == "hf":
        from grpo_cli.rollout.engine import HfEngine

        return HfEngine(policy, cfg.rollout.merge_adapters)
    from grpo_cli.rollout.vllm import VllmEngine

    return VllmEngine(policy, vllm_options(cfg, policy), seed=cfg.trainer.seed)


def vllm_options(cfg: GrpoConfig, policy: Any) -> Any:
    """`VllmOptions` from `rollout.vllm` and `model`. The LoRA rank vLLM reserves is the
    policy's adapter's, as built: an adapter from model.adapter_path keeps its own rank
    (and per-module ranks) whatever model.lora.r says."""
    from grpo_cli.config.vllm_rules import max_lora_rank
    from grpo_cli.policy.demo_model import resolve_model_path
    from grpo_cli.rollout.vllm import VllmOptions

    v, m = cfg.rollout.vllm, cfg.model
    rank = None
    if policy.lora_enabled:
        peft_cfg = policy.model.peft_config["default"]
        rank = max_lora_rank(max([peft_cfg.r, *(peft_cfg.rank_pattern or {}).values()]))
    return VllmOptions(
        model_path=resolve_model_path(m.name_or_path, m.gguf_file), max_lora_rank=rank,
        quantization=m.quantization, gpu_memory_utilization=v.gpu_memory_utilization,
        cpu_kv_cache_gib=v.cpu_kv_cache_gib, enable_prefix_caching=v.enable_prefix_caching,
        sleep=v.sleep, max_model_len=v.max_model_len, log=v.log,
        trust_remote_code=m.trust_remote_code, revision=m.revision)


def rollout_seed(seed: int, step: int, indices: list[int]) -> int:
    """A step's sampling seed for engines that seed each request (vllm): the run's seed, the
    step and its prompts, so a repeated or resumed run samples the same completions."""
    import zlib

    return zlib.crc32(repr((seed, step, list(indices))).encode()) % 2**31

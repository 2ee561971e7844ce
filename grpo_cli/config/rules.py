"""Validation of a composed config: each field's allowed values and range (its metadata in
schema.py), and the cross-field rules, each a small function returning the problem or None.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any, Callable, List, Optional

from omegaconf import DictConfig

from grpo_cli.config.schema import AlgoConfig, ConfigError, GrpoConfig, RewardComponent
from grpo_cli.config.vllm_rules import VLLM_SHARED_RULES, VLLM_TRAIN_RULES


def _check_field(path: str, value: Any, meta: dict) -> None:
    if value is None or isinstance(value, (DictConfig,)):
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{path}={value!r} is not allowed; choose one of: "
                          + ", ".join(map(str, choices)))
    lo, hi, gt = meta.get("min"), meta.get("max"), meta.get("gt")
    if lo is not None and value < lo:
        raise ConfigError(f"{path}={value} is out of range; it must be >= {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{path}={value} is out of range; it must be <= {hi}")
    if gt is not None and value <= gt:
        raise ConfigError(f"{path}={value} is out of range; it must be > {gt}")


def _walk(schema: Any, cfg: Any, prefix: str) -> None:
    for f in fields(schema):
        path = f"{prefix}{f.name}"
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            _walk(value, value, path + ".")
        else:
            _check_field(path, value, f.metadata)


def _rule_clip(c: GrpoConfig) -> str | None:
    # CISPO clips a weight, not the objective: a floor of 0 (epsilon_low=1) is "no lower bound".
    if c.algo.epsilon_low >= 1 and c.algo.policy_loss != "cispo":
        return (f"algo.epsilon_low={c.algo.epsilon_low} must be < 1 (the ratio floor 1-eps > 0;"
                " only algo.policy_loss=cispo takes 1, no lower bound)")
    return None


def _rule_delta(c: GrpoConfig) -> str | None:
    a = c.algo
    if a.delta is None:
        return None
    if a.policy_loss != "clip":
        return (f"algo.delta={a.delta} caps the unclipped ratio of algo.policy_loss=clip; "
                f"{a.policy_loss} has none: set algo.delta=null")
    if a.delta <= 1 + a.epsilon_high:
        return (f"algo.delta={a.delta} must be > 1 + algo.epsilon_high = {1 + a.epsilon_high:g}"
                " (below it, it would cut positive-advantage tokens the clip keeps)")
    return None


def _rule_sapo_tau(c: GrpoConfig) -> str | None:
    # The temperatures shape SAPO's gate only; elsewhere a changed value would do nothing.
    a, default = c.algo, AlgoConfig()
    if a.policy_loss == "sapo":
        return None
    for key in ("sapo_tau_pos", "sapo_tau_neg"):
        if getattr(a, key) != getattr(default, key):
            return (f"algo.{key}={getattr(a, key)} shapes the gate of algo.policy_loss=sapo; "
                    f"{a.policy_loss} has none: use algo=sapo or leave algo.{key} as it is")
    return None


def _rule_min_tokens(c: GrpoConfig) -> str | None:
    if c.rollout.min_new_tokens > c.rollout.max_new_tokens:
        return (f"rollout.min_new_tokens={c.rollout.min_new_tokens} must be <= "
                f"rollout.max_new_tokens={c.rollout.max_new_tokens}")
    return None


def _rule_quant_lora(c: GrpoConfig) -> str | None:
    if c.model.quantization != "none" and not c.model.lora.enabled:
        return (f"model.quantization={c.model.quantization} needs model.lora.enabled=true: "
                "quantized base weights cannot be trained directly")
    return None


def _rule_adapter_lora(c: GrpoConfig) -> str | None:
    if c.model.adapter_path is not None and not c.model.lora.enabled:
        return ("model.adapter_path needs model.lora.enabled=true (for a full model folder, "
                "set model.name_or_path to it instead)")
    return None


def _rule_rewards(c: GrpoConfig) -> str | None:
    if not c.reward.components:
        return "reward.components is empty: name at least one reward (e.g. reward=math)"
    return None


def _rule_kl_target(c: GrpoConfig) -> str | None:
    if c.algo.kl_target is not None and c.algo.beta <= 0:
        return (f"algo.kl_target={c.algo.kl_target} needs a starting algo.beta > 0 (the "
                "controller scales beta up or down, and 0 stays 0); e.g. algo.beta=0.04")
    return None


def _rule_lora_dropout(c: GrpoConfig) -> str | None:
    if c.model.lora.enabled and c.model.lora.dropout > 0:
        return (f"model.lora.dropout={c.model.lora.dropout} is not supported by grpo train: "
                "GRPO's importance ratio compares log-probs of the same tokens across passes, "
                "and random dropout masks make them differ; set model.lora.dropout=0")
    return None


def _rule_rloo(c: GrpoConfig) -> str | None:
    if c.algo.baseline == "rloo" and c.algo.num_generations < 2:
        return "algo.baseline=rloo needs algo.num_generations >= 2"
    return None


Rule = Callable[[GrpoConfig], Optional[str]]
# The rules of every command (grpo eval builds the policy too), then training's own.
# rollout.engine=vllm's rules come last: the one that looks for an installed vLLM runs after
# every rule about the config itself.
SHARED_RULES: List[Rule] = [_rule_clip, _rule_min_tokens, _rule_quant_lora, _rule_adapter_lora]
CROSS_FIELD_RULES: List[Rule] = SHARED_RULES + [
    _rule_rewards, _rule_rloo, _rule_kl_target, _rule_lora_dropout, _rule_delta,
    _rule_sapo_tau,
] + VLLM_TRAIN_RULES + VLLM_SHARED_RULES
SHARED_RULES = SHARED_RULES + VLLM_SHARED_RULES


def validate(cfg: GrpoConfig, *, for_training: bool = True) -> None:
    """Check choices, ranges and cross-field rules; raise ConfigError with one line."""
    _walk(GrpoConfig, cfg, "")
    for name, comp in cfg.reward.components.items():
        _walk(RewardComponent, comp, f"reward.components.{name}.")
    rules = CROSS_FIELD_RULES if for_training else SHARED_RULES
    for rule in rules:
        problem = rule(cfg)
        if problem:
            raise ConfigError(problem)

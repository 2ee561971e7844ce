"""The training config as the values the rollout engine takes.

rollout/ and algo/ take plain settings values and never import a config schema; the trainer
builds those values here, in one place, from the groups that hold them.
"""

from __future__ import annotations

from grpo_cli.config.schema import RolloutConfig
from grpo_cli.rollout.settings import SamplingSettings


def sampling_settings(rollout: RolloutConfig, num_generations: int) -> SamplingSettings:
    """What a training step samples: `algo.num_generations` completions per prompt, drawn
    as `rollout` says (never greedy: GRPO needs varied groups)."""
    return SamplingSettings(num_samples=num_generations, max_new_tokens=rollout.max_new_tokens,
                            temperature=rollout.temperature, top_p=rollout.top_p,
                            top_k=rollout.top_k, min_new_tokens=rollout.min_new_tokens)

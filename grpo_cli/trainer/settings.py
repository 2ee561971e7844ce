"""The training config as the values the rollout engine and the loss take.

rollout/ and algo/ take plain settings values and never import a config schema; the trainer
builds those values here, in one place, from the groups that hold them.
"""

from __future__ import annotations

from grpo_cli.algo.loss import LossSettings
from grpo_cli.config.schema import AlgoConfig, RolloutConfig
from grpo_cli.rollout.settings import SamplingSettings


def sampling_settings(rollout: RolloutConfig, num_generations: int) -> SamplingSettings:
    """What a training step samples: `algo.num_generations` completions per prompt, drawn
    as `rollout` says (never greedy: GRPO needs varied groups)."""
    return SamplingSettings(num_samples=num_generations, max_new_tokens=rollout.max_new_tokens,
                            temperature=rollout.temperature, top_p=rollout.top_p,
                            top_k=rollout.top_k, min_new_tokens=rollout.min_new_tokens)


def loss_settings(algo: AlgoConfig, max_completion_length: int, beta: float) -> LossSettings:
    """The loss of a training step: `algo`'s clip range, aggregation and importance cap, with
    `beta` from the KL controller (it moves under algo.kl_target; 0 when no reference ran)
    and `rollout.max_new_tokens` as the max completion length."""
    return LossSettings(epsilon_low=algo.epsilon_low, epsilon_high=algo.epsilon_high,
                        beta=beta, loss_agg=algo.loss_agg,
                        max_completion_length=max_completion_length, is_cap=algo.is_cap)

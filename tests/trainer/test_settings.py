"""The trainer's configs as the engine's settings value (trainer/settings.py)."""

from grpo_cli.config.schema import RolloutConfig
from grpo_cli.rollout.settings import SamplingSettings
from grpo_cli.trainer.settings import sampling_settings


def test_sampling_settings_take_every_sampling_key_of_the_rollout_config():
    rollout = RolloutConfig(max_new_tokens=48, min_new_tokens=3, temperature=0.7, top_p=0.9,
                            top_k=20, batch_size=16, merge_adapters="on")
    assert sampling_settings(rollout, num_generations=6) == SamplingSettings(
        num_samples=6, max_new_tokens=48, temperature=0.7, top_p=0.9, top_k=20,
        min_new_tokens=3, greedy=False)

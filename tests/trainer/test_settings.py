"""The trainer's configs as the engine's and the loss's settings values (trainer/settings.py)."""

from grpo_cli.algo.loss import LossSettings
from grpo_cli.config.schema import AlgoConfig, RolloutConfig
from grpo_cli.rollout.settings import SamplingSettings
from grpo_cli.trainer.settings import loss_settings, sampling_settings


def test_sampling_settings_take_every_sampling_key_of_the_rollout_config():
    rollout = RolloutConfig(max_new_tokens=48, min_new_tokens=3, temperature=0.7, top_p=0.9,
                            top_k=20, batch_size=16, merge_adapters="on")
    assert sampling_settings(rollout, num_generations=6) == SamplingSettings(
        num_samples=6, max_new_tokens=48, temperature=0.7, top_p=0.9, top_k=20,
        min_new_tokens=3, greedy=False)


def test_loss_settings_take_the_algo_keys_and_the_step_s_beta():
    algo = AlgoConfig(epsilon_low=0.2, epsilon_high=0.28, beta=0.04, loss_agg="token_mean",
                      is_cap=3.0)
    # beta is the KL controller's value of the step, not algo.beta.
    assert loss_settings(algo, max_completion_length=64, beta=0.05) == LossSettings(
        epsilon_low=0.2, epsilon_high=0.28, beta=0.05, loss_agg="token_mean",
        max_completion_length=64, is_cap=3.0)

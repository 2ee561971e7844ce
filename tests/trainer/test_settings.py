"""The trainer's configs as the engine's and the loss's settings values (trainer/settings.py)."""

from types import SimpleNamespace

import pytest

from grpo_cli.algo.loss import LossSettings
from grpo_cli.config import vllm_rules
from grpo_cli.config.compose import compose_config
from grpo_cli.config.schema import AlgoConfig, RolloutConfig
from grpo_cli.errors import UserError
from grpo_cli.rollout.settings import SamplingSettings
from grpo_cli.trainer.settings import loss_settings, sampling_settings, vllm_options


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


def test_loss_settings_take_sapos_temperatures():
    algo = AlgoConfig(policy_loss="sapo", sapo_tau_pos=0.5, sapo_tau_neg=2.0, beta=0.0)
    settings = loss_settings(algo, max_completion_length=8, beta=0.0)
    assert (settings.policy_loss, settings.sapo_tau_pos, settings.sapo_tau_neg) == (
        "sapo", 0.5, 2.0)


def test_vllm_reserves_the_rank_of_the_adapter_as_loaded(tiny_llama_path, monkeypatch):
    """An adapter from model.adapter_path keeps its own ranks (r=32, one module at 64):
    vLLM is built for 64, not for model.lora.r=16, which would refuse the adapter."""
    monkeypatch.setattr(vllm_rules, "vllm_installed", lambda: True)
    _, cfg = compose_config("train", ["rollout.engine=vllm", "model.lora.r=16",
                                      f"model.name_or_path={tiny_llama_path}"])
    peft_cfg = SimpleNamespace(r=32, rank_pattern={"q_proj": 64})
    policy = SimpleNamespace(lora_enabled=True,
                             model=SimpleNamespace(peft_config={"default": peft_cfg}))
    assert vllm_options(cfg, policy).max_lora_rank == 64
    peft_cfg.r, peft_cfg.rank_pattern = 12, {}
    assert vllm_options(cfg, policy).max_lora_rank == 16  # the next size vLLM offers
    peft_cfg.r = 600
    with pytest.raises(UserError, match="rank 600 is above vLLM's largest LoRA rank"):
        vllm_options(cfg, policy)
    policy.lora_enabled = False  # grpo eval of a base model
    assert vllm_options(cfg, policy).max_lora_rank is None

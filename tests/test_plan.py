"""grpo plan: memory estimate per part, fit verdict, and the suggested fix."""

from __future__ import annotations

import pytest

from grpo_cli.config.compose import compose_config
from grpo_cli.errors import UserError
from grpo_cli.plan import KNOWN_ARCHS, GiB, estimate, run_plan


def plan_for(*overrides: str):
    _, cfg = compose_config("train", list(overrides))
    return cfg, estimate(cfg, KNOWN_ARCHS[cfg.model.name_or_path])


def test_qwen7b_recipe_fits_a_24gb_card():
    cfg, parts = plan_for("+recipe=gsm8k_qwen7b")
    total = sum(parts.values()) / GiB
    # NF4 weights of a 7.6B model: ~6.5B quantized linear params at ~4.5 bits + bf16 embeddings.
    assert 4.5 < parts["weights"] / GiB < 6.5
    assert total < 20
    assert "fits" in run_plan(cfg, "rtx4090")


def test_checkpointing_off_and_big_micro_batch_does_not_fit_and_says_why():
    cfg, parts = plan_for("+recipe=gsm8k_qwen7b", "model.gradient_checkpointing=false",
                          "trainer.micro_batch_size=8")
    text = run_plan(cfg, "rtx4090")
    assert "does NOT fit" in text and "model.gradient_checkpointing=true" in text


def test_quantization_shrinks_weights():
    _, nf4 = plan_for("+recipe=gsm8k_qwen7b")
    _, bf16 = plan_for("+recipe=gsm8k_qwen7b", "model.quantization=none")
    assert bf16["weights"] > 2.4 * nf4["weights"]  # embeddings stay bf16 in both


def test_unknown_gpu_is_a_user_error():
    cfg, _ = plan_for("+recipe=gsm8k_qwen7b")
    with pytest.raises(UserError, match="gpu=tpu"):
        run_plan(cfg, "tpu")


def test_merged_decoding_copy_is_counted_when_forced_and_noted_under_auto():
    cfg, parts = plan_for("+recipe=gsm8k_qwen7b", "rollout.merge_adapters=on")
    # 28 layers of q,o (3584^2) + k,v (3584 x 512) + MLP (3 x 3584 x 18944), bf16: ~12.2 GiB.
    assert 12.0 < parts["merged copy"] / GiB < 12.5
    assert "does NOT fit" in run_plan(cfg, "rtx4090")
    cfg, parts = plan_for("+recipe=gsm8k_qwen7b")
    assert "merged copy" not in parts
    assert "merges LoRA into dense weights when 12.15 GiB" in run_plan(cfg, "rtx4090")

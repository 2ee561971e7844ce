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


# rollout.engine=vllm. Qwen2.5-7B by hand: linear params 28 x (3584^2 x 2 + 3584 x 512 x 2
# + 3 x 3584 x 18944) = 6,525,288,448; embeddings + lm-head (untied) 2 x 152064 x 3584 =
# 1,089,994,752. SmolLM2-135M: 30 x (576^2 x 2 + 576 x 192 x 2 + 3 x 576 x 1536) =
# 106,168,320 linear + 49152 x 576 = 28,311,552 tied embeddings = 134,479,872 params.
QWEN7B_NF4_WEIGHTS = 6_525_288_448 * (4 + 0.127 * 4) / 8 + 1_089_994_752 * 2  # 5.45 GiB


def vllm_plan_for(monkeypatch, *overrides: str):
    from grpo_cli.config import vllm_rules

    monkeypatch.setattr(vllm_rules, "vllm_installed", lambda: True)  # a plan loads nothing
    return plan_for("rollout.engine=vllm", *overrides)


def test_vllm_on_cuda_takes_its_share_in_the_rollout_and_sleeps_through_training(monkeypatch):
    from grpo_cli.plan import peaks, vllm_memory

    cfg, parts = vllm_plan_for(monkeypatch, "+recipe=gsm8k_qwen7b")
    assert "kv_cache" not in parts and "merged copy" not in parts  # vLLM samples
    vllm = vllm_memory(cfg, KNOWN_ARCHS[cfg.model.name_or_path], 24 * GiB)
    assert vllm.total == pytest.approx(0.3 * 24 * GiB)  # 7.2 GiB of the rtx4090
    assert vllm.weights == pytest.approx(QWEN7B_NF4_WEIGHTS) == pytest.approx(parts["weights"])
    assert vllm.kv_cache == pytest.approx(7.2 * GiB - QWEN7B_NF4_WEIGHTS)  # 1.75 GiB
    held = parts["weights"] + parts["lora + optimizer"] + parts["overhead"]
    peak = peaks(parts, vllm)
    assert peak["rollout"] == pytest.approx(held + 7.2 * GiB)  # 15.36 GiB
    assert peak["training"] == pytest.approx(sum(parts.values()))  # asleep: 11.39 GiB
    text = run_plan(cfg, "rtx4090")
    assert "vllm (CUDA)           7.20 GiB" in text and "0.3 x 24.0 GiB" in text
    assert "weights copy 5.45 + KV cache 1.75 GiB" in text and "asleep while training" in text
    assert "peak in rollout      15.36 GiB" in text and "peak in training     11.39 GiB" in text
    assert "total (estimate)     15.36 GiB" in text and "merged decoding" not in text


def test_vllm_without_sleep_holds_its_share_in_training_too(monkeypatch):
    from grpo_cli.plan import peaks, vllm_memory

    cfg, parts = vllm_plan_for(monkeypatch, "+recipe=gsm8k_qwen7b", "rollout.vllm.sleep=false")
    vllm = vllm_memory(cfg, KNOWN_ARCHS[cfg.model.name_or_path], 24 * GiB)
    assert peaks(parts, vllm)["training"] == pytest.approx(sum(parts.values()) + 7.2 * GiB)
    text = run_plan(cfg, "rtx4090")
    assert "held while training too" in text and "total (estimate)     18.59 GiB" in text


def test_vllm_share_too_small_for_its_weights_copy_says_so(monkeypatch):
    cfg, _ = vllm_plan_for(monkeypatch, "+recipe=gsm8k_qwen7b",
                           "rollout.vllm.gpu_memory_utilization=0.2")
    text = run_plan(cfg, "rtx4090")  # 4.8 GiB < the 5.45 GiB weights copy
    assert "no room for a KV cache; raise rollout.vllm.gpu_memory_utilization" in text


def test_vllm_on_cpu_adds_its_fp32_copy_and_kv_cache_for_the_whole_run(monkeypatch):
    from grpo_cli.plan import peaks, vllm_memory

    cfg, parts = vllm_plan_for(monkeypatch, "model.device=cpu",
                               "rollout.vllm.cpu_kv_cache_gib=2")
    vllm = vllm_memory(cfg, KNOWN_ARCHS[cfg.model.name_or_path], None)
    assert not vllm.on_cuda
    assert vllm.weights == 134_479_872 * 4  # unquantized fp32 copy: 0.50 GiB
    assert vllm.kv_cache == 2 * GiB
    assert parts["weights"] == 134_479_872 * 4  # dtype auto is fp32 on CPU for both
    assert peaks(parts, vllm)["training"] == sum(parts.values()) + 134_479_872 * 4 + 2 * GiB
    text = run_plan(cfg)
    assert "vllm (CPU)            2.50 GiB" in text and "held all run" in text


def test_vllm_on_an_unknown_gpu_names_the_share_but_cannot_count_it(monkeypatch):
    from grpo_cli.plan import vllm_lines, vllm_memory

    cfg, _ = vllm_plan_for(monkeypatch, "+recipe=gsm8k_qwen7b")
    assert vllm_memory(cfg, KNOWN_ARCHS[cfg.model.name_or_path], None) is None
    assert "name the GPU (gpu=NAME) to count it" in "\n".join(vllm_lines(cfg, None, None))


def test_ranks_give_the_memory_per_gpu_of_a_data_parallel_run():
    _, cfg = compose_config("train", ["+recipe=gsm8k_qwen7b", "trainer.prompts_per_step=8"])
    arch = KNOWN_ARCHS[cfg.model.name_or_path]
    one, four = estimate(cfg, arch), estimate(cfg, arch, ranks=4)
    # Each rank samples 8 / 4 = 2 prompts x G: a quarter of the rollout's KV cache ...
    assert four["kv_cache"] == pytest.approx(one["kv_cache"] / 4)
    # ... and holds the whole model, its LoRA state and one micro-batch's activations.
    for part in ("weights", "lora + optimizer", "activations", "logits"):
        assert four[part] == one[part]
    # plus the fp32 bucket the gradient sum goes through: 2**24 values at most.
    assert "gradient sum" not in one and four["gradient sum"] == 2**24 * 4
    text = run_plan(cfg, "rtx4090", ranks=4)
    assert "per GPU with 4 data-parallel ranks" in text and "2 of the 8 prompts" in text


def test_ranks_that_do_not_divide_the_prompts_are_refused():
    cfg, _ = plan_for("+recipe=gsm8k_qwen7b", "trainer.prompts_per_step=4")
    with pytest.raises(UserError, match="ranks=3: trainer.prompts_per_step=4 must split"):
        run_plan(cfg, "rtx4090", ranks=3)

"""Decoding with LoRA merged into dense weights (merge.py) gives the policy's own outputs,
and leaves the policy exactly as it was."""

from __future__ import annotations

import pytest
import torch
from lora_policy import lora_policy

from grpo_cli.config.schema import LoraConfig, ModelConfig
from grpo_cli.policy import merge
from grpo_cli.policy.model import build_policy
from grpo_cli.rollout.engine import SamplingSettings, generate

IDS = torch.tensor([[5, 17, 42, 99, 7, 300, 12, 64], [8, 9, 10, 11, 120, 13, 14, 15]])  # [2, 8]
PROMPTS = ["What is 2 + 3?", "Natalia sold clips to 48 of her friends in April"]


def _policy(path, quantization: str = "none"):
    return lora_policy(path, quantization)


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("arch,quantization,atol", [
    ("tiny_llama_path", "none", 2e-5), ("tiny_llama_path", "nf4", 2e-3),
    ("tiny_qwen2_path", "none", 2e-5),  # q/k/v biases
])
def test_merged_logits_equal_the_policy_and_nothing_changes(request, arch, quantization, atol):
    policy = _policy(request.getfixturevalue(arch), quantization)
    model = policy.model
    before = _snapshot(model)
    layers = [m for m, _ in merge._lora_layers(model)]
    bases = [m.base_layer for m in layers]
    with torch.no_grad():
        plain = model(input_ids=IDS).logits  # [2, 8, V]
        with merge.merged_for_decoding(model, "on") as merged:
            assert merged
            assert all(type(m.base_layer) is merge.MergedLinear for m in layers)
            fused = model(input_ids=IDS).logits  # [2, 8, V]
        again = model(input_ids=IDS).logits
    assert torch.allclose(fused, plain, atol=atol), (fused - plain).abs().max()
    assert not torch.allclose(plain, _reference_logits(policy))  # the adapter matters
    assert torch.equal(again, plain)
    assert [m.base_layer for m in layers] == bases  # the same objects are back
    after = _snapshot(model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def _reference_logits(policy):
    with policy.reference() as ref, torch.no_grad():
        return ref(input_ids=IDS).logits


def test_merged_greedy_decoding_gives_the_same_tokens(tiny_llama_path):
    policy = _policy(tiny_llama_path)
    greedy = SamplingSettings(num_samples=2, max_new_tokens=10, greedy=True)
    plain = generate(policy.model, policy.tokenizer, PROMPTS, greedy, merge_adapters="off")
    fused = generate(policy.model, policy.tokenizer, PROMPTS, greedy, merge_adapters="on")
    assert torch.equal(fused.completion_ids, plain.completion_ids)
    assert plain.sampler_logp is None and fused.sampler_logp is None  # greedy: none kept


def test_merged_sampling_keeps_sampler_logprobs(tiny_llama_path):
    policy = _policy(tiny_llama_path)
    torch.manual_seed(0)
    ro = generate(policy.model, policy.tokenizer, PROMPTS,
                  SamplingSettings(num_samples=3, max_new_tokens=6), merge_adapters="on")
    assert ro.sampler_logp is not None and ro.sampler_logp.shape == ro.completion_ids.shape
    assert torch.all(ro.sampler_logp[ro.completion_mask == 0] == 0)
    assert torch.all(ro.sampler_logp[ro.completion_mask == 1] < 0)
    sel = ro.select([1, 4])
    assert torch.equal(sel.sampler_logp, ro.sampler_logp[[1, 4]])


def test_no_merge_when_off_adapters_disabled_or_no_lora(tiny_llama_path):
    policy = _policy(tiny_llama_path)
    with merge.merged_for_decoding(policy.model, "off") as merged:
        assert not merged
    with policy.reference() as ref, merge.merged_for_decoding(ref, "on") as merged:
        assert not merged  # the reference (adapters off) is already dense
    full = build_policy(ModelConfig(name_or_path=str(tiny_llama_path), dtype="fp32",
                                    lora=LoraConfig(enabled=False)), need_reference=False)
    with merge.merged_for_decoding(full.model, "on") as merged:
        assert not merged


def test_auto_merges_only_when_the_copy_fits(tiny_llama_path, monkeypatch):
    policy = _policy(tiny_llama_path)
    need = merge.merged_bytes(policy.model, torch.float32)
    assert need > 0
    monkeypatch.setattr(merge, "free_bytes", lambda device: need + (2 << 30))
    assert merge.should_merge(policy.model, "auto")
    monkeypatch.setattr(merge, "free_bytes", lambda device: need)
    assert not merge.should_merge(policy.model, "auto")
    assert merge.should_merge(policy.model, "on")


def test_restores_the_policy_after_an_error(tiny_llama_path):
    policy = _policy(tiny_llama_path)
    bases = [m.base_layer for m, _ in merge._lora_layers(policy.model)]
    with pytest.raises(RuntimeError, match="boom"):
        with merge.merged_for_decoding(policy.model, "on"):
            raise RuntimeError("boom")
    assert [m.base_layer for m, _ in merge._lora_layers(policy.model)] == bases
    assert all(not m.disable_adapters for m, _ in merge._lora_layers(policy.model))

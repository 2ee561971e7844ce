"""Adapter checkpoints round-trip exactly; the merged export equals the adapter model."""

from __future__ import annotations

import pytest
import torch
from lora_policy import lora_policy
from transformers import AutoModelForCausalLM, AutoTokenizer

from grpo_cli.config.schema import LoraConfig, ModelConfig
from grpo_cli.errors import UserError
from grpo_cli.policy.export import export_merged
from grpo_cli.policy.model import build_policy, save_policy

IDS = torch.tensor([[5, 17, 42, 99, 7, 300, 12, 64], [8, 9, 10, 11, 120, 13, 14, 15]])  # [2, 8]
PROMPTS = ["What is 2 + 3?", "Natalia sold clips to 48 friends.", "Think step by step."]


def token_logprobs(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids).logits[:, :-1].float()  # [B, L-1, V]
    return torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # [B, L-1]


def trained_policy(path, quantization: str):
    """A policy whose adapter is non-zero (as after some training)."""
    policy = lora_policy(path, quantization, need_reference=False)
    return policy.cfg, policy


def greedy(model, tok, prompt: str) -> list[int]:
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}],
                                  add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    out = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    return out[0, ids["input_ids"].shape[1]:].tolist()


@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_adapter_checkpoint_round_trip(tiny_llama_path, tmp_path, quantization):
    cfg, policy = trained_policy(tiny_llama_path, quantization)
    with torch.no_grad():
        before = token_logprobs(policy.model, IDS)
    folder = save_policy(policy, tmp_path / "ckpt")
    assert (folder / "adapter_model.safetensors").is_file()
    assert (folder / "adapter_config.json").is_file() and (folder / "tokenizer.json").is_file()
    assert not (folder / "model.safetensors").exists()  # the adapter only
    cfg.adapter_path = str(folder)
    loaded = build_policy(cfg, need_reference=True)
    loaded.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(token_logprobs(loaded.model, IDS), before, rtol=0, atol=0)
    trainable = [n for n, p in loaded.model.named_parameters() if p.requires_grad]
    assert len(trainable) == 28 and all("lora_" in n for n in trainable)  # it trains on


def test_full_model_checkpoint_round_trip(tiny_qwen2_path, tmp_path):
    cfg = ModelConfig(name_or_path=str(tiny_qwen2_path), lora=LoraConfig(enabled=False))
    policy = build_policy(cfg, need_reference=False)
    with torch.no_grad():
        policy.model.model.norm.weight.mul_(1.5)  # "trained"
        before = token_logprobs(policy.model, IDS)
    folder = save_policy(policy, tmp_path / "full")
    assert (folder / "model.safetensors").is_file()
    loaded = build_policy(ModelConfig(name_or_path=str(folder), lora=LoraConfig(enabled=False)),
                          need_reference=False)
    with torch.no_grad():
        torch.testing.assert_close(token_logprobs(loaded.model, IDS), before, rtol=0, atol=0)


@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_merged_export_matches_the_adapter_model(tiny_llama_path, tmp_path, quantization):
    cfg, policy = trained_policy(tiny_llama_path, quantization)
    ckpt = save_policy(policy, tmp_path / "ckpt")
    out = export_merged(ckpt, tmp_path / "merged", cfg, dtype="fp32")
    merged = AutoModelForCausalLM.from_pretrained(out).eval()  # plain transformers
    tok = AutoTokenizer.from_pretrained(out)
    assert not hasattr(merged.config, "quantization_config")
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        # (W + s*B@A) x vs W x + s*B(A x) in fp32: equal up to rounding (~1e-6 on logits of
        # size ~1). 1e-4 is far below what a wrong base (e.g. NF4 re-quantized, or merged
        # into the original instead of the dequantized weights) gives: ~1e-2 here.
        torch.testing.assert_close(token_logprobs(merged, IDS),
                                   token_logprobs(policy.model, IDS), rtol=0, atol=1e-4)
        for prompt in PROMPTS:
            assert greedy(merged, tok, prompt) == greedy(policy.model, policy.tokenizer, prompt)


def test_nf4_export_differs_from_merging_into_the_original_base(tiny_llama_path, tmp_path):
    """Why the export dequantizes: the unquantized base is not what the adapter saw."""
    cfg, policy = trained_policy(tiny_llama_path, "nf4")
    ckpt = save_policy(policy, tmp_path / "ckpt")
    plain = ModelConfig(name_or_path=str(tiny_llama_path), dtype="fp32")
    wrong = AutoModelForCausalLM.from_pretrained(export_merged(ckpt, tmp_path / "m", plain))
    with torch.no_grad():
        gap = token_logprobs(wrong.float(), IDS) - token_logprobs(policy.model, IDS)
    assert gap.abs().max() > 1e-3


def test_export_rejects_bad_folders(tiny_llama_path, tmp_path):
    cfg = ModelConfig(name_or_path=str(tiny_llama_path))
    with pytest.raises(UserError, match="adapter_config.json"):
        export_merged(tiny_llama_path, tmp_path / "out", cfg)
    _, policy = trained_policy(tiny_llama_path, "none")
    ckpt = save_policy(policy, tmp_path / "ckpt")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        export_merged(ckpt, tmp_path / "busy", cfg)


def test_export_checkpoint_reads_the_run_config(tiny_llama_path, tmp_path):
    """`grpo export checkpoint=<run>/checkpoints/final` finds base + quantization itself."""
    from omegaconf import OmegaConf

    from grpo_cli.policy.export import export_checkpoint

    cfg, policy = trained_policy(tiny_llama_path, "nf4")
    final = tmp_path / "run" / "checkpoints" / "final"
    save_policy(policy, final / "policy")
    (final / "meta.json").write_text('{"step": 1}')
    (final / "config.yaml").write_text(OmegaConf.to_yaml({"model": OmegaConf.structured(cfg)}))
    out = export_checkpoint(final)
    assert out == tmp_path / "run" / "merged" / "final"
    assert '"dtype": "float32"' in (out / "config.json").read_text()  # the default: fp32
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(token_logprobs(merged, IDS),
                                   token_logprobs(policy.model, IDS), rtol=0, atol=1e-4)

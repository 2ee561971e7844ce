"""build_policy on tiny models: QLoRA training path, reference policies, loading rules."""

from __future__ import annotations

import json

import pytest
import torch
from lora_policy import perturb_lora_b
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from grpo_cli.config.compose import compose_config
from grpo_cli.config.schema import LoraConfig, ModelConfig
from grpo_cli.errors import UserError
from grpo_cli.policy.model import build_policy

IDS = torch.tensor([[5, 17, 42, 99, 7, 300, 12, 64], [8, 9, 10, 11, 120, 13, 14, 15]])  # [2, 8]


def token_logprobs(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """log p(ids[:, t] | ids[:, <t]) for t >= 1, straight from the logits."""
    logits = model(input_ids=ids).logits[:, :-1].float()  # [B, L-1, V]
    return torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # [B, L-1]


def qlora_cfg(path, **kw) -> ModelConfig:
    return ModelConfig(name_or_path=str(path), quantization="nf4", dtype="fp32",
                       lora=LoraConfig(r=8, alpha=16.0), **kw)


@pytest.mark.parametrize("arch", ["tiny_llama_path", "tiny_qwen2_path"])
def test_qlora_forward_backward_trains_only_lora(arch, request):
    policy = build_policy(qlora_cfg(request.getfixturevalue(arch)), need_reference=True)
    kinds = {type(m).__name__ for m in policy.model.modules()}
    assert "Linear4bit" in kinds  # the base really is 4-bit
    perturb_lora_b(policy.model)
    policy.model.train()
    token_logprobs(policy.model, IDS).sum().backward()
    with_grad = {n for n, p in policy.model.named_parameters() if p.grad is not None}
    trainable = {n for n, p in policy.model.named_parameters() if p.requires_grad}
    assert with_grad == trainable and with_grad
    assert all("lora_A" in n or "lora_B" in n for n in with_grad)
    # all-linear: 7 projections x 2 layers x (A, B); never the lm-head
    assert len(with_grad) == 28 and not any("lm_head" in n for n in with_grad)
    params = dict(policy.model.named_parameters())
    assert all(params[n].dtype == torch.float32 for n in with_grad)  # fp32 adapters
    assert "nf4" in policy.summary() and "trainable" in policy.summary()


def test_gradient_checkpointing_qlora_gives_the_same_grads(tiny_llama_path):
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)  # same LoRA A init in both builds
        policy = build_policy(qlora_cfg(tiny_llama_path, gradient_checkpointing=ckpt),
                              need_reference=False)
        perturb_lora_b(policy.model)
        policy.model.train()
        assert policy.model.base_model.model.is_activation_checkpointing == ckpt
        token_logprobs(policy.model, IDS).sum().backward()
        grads.append({n: p.grad.clone() for n, p in policy.model.named_parameters()
                      if p.grad is not None})
    assert grads[1].keys() == grads[0].keys() and len(grads[1]) == 28
    for name, grad in grads[0].items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_reference_is_the_base_with_adapters_disabled(tiny_llama_path, quantization):
    cfg = ModelConfig(name_or_path=str(tiny_llama_path), quantization=quantization, dtype="fp32")
    policy = build_policy(cfg, need_reference=True)
    perturb_lora_b(policy.model)
    policy.model.eval()
    quant = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.float32)
             if quantization == "nf4" else None)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_path, dtype=torch.float32,
                                                quantization_config=quant).eval()
    with torch.no_grad():
        base_logp = token_logprobs(base, IDS)
        policy_logp = token_logprobs(policy.model, IDS)
    with policy.reference() as ref:
        assert ref is policy.model  # no second copy of the weights
        assert not torch.is_grad_enabled()
        ref_logp = token_logprobs(ref, IDS)
    torch.testing.assert_close(ref_logp, base_logp, rtol=0, atol=1e-6)
    assert (policy_logp - base_logp).abs().max() > 1e-2  # the adapter is active outside
    with torch.no_grad():
        torch.testing.assert_close(token_logprobs(policy.model, IDS), policy_logp)


def test_full_finetune_has_a_frozen_reference_copy(tiny_qwen2_path):
    cfg = ModelConfig(name_or_path=str(tiny_qwen2_path), lora=LoraConfig(enabled=False))
    policy = build_policy(cfg, need_reference=True)
    assert all(p.requires_grad for p in policy.model.parameters())
    assert "full fine-tuning" in policy.summary() and "frozen copy" in policy.summary()
    with policy.reference() as ref:
        assert ref is not policy.model
        assert not any(p.requires_grad for p in ref.parameters())
        before = token_logprobs(ref, IDS)
    opt = torch.optim.SGD(policy.model.parameters(), lr=1.0)
    (-token_logprobs(policy.model, IDS).sum()).backward()
    opt.step()
    with policy.reference() as ref:
        torch.testing.assert_close(token_logprobs(ref, IDS), before, rtol=0, atol=0)
    with torch.no_grad():
        assert (token_logprobs(policy.model, IDS) - before).abs().max() > 1e-3


def test_no_reference_when_not_needed(tiny_llama_path):
    policy = build_policy(ModelConfig(name_or_path=str(tiny_llama_path)), need_reference=False)
    with pytest.raises(RuntimeError, match="need_reference=False"):
        with policy.reference():
            pass


def test_trust_remote_code_is_off_by_default(tiny_llama_path, tmp_path):
    folder = tmp_path / "custom"
    folder.mkdir()
    for f in tiny_llama_path.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "grpo_custom_arch"
    config["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig",
                          "AutoModelForCausalLM": "modeling_custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("configuration_custom.py", "modeling_custom.py"):  # would fail loudly if run
        (folder / name).write_text("raise RuntimeError('remote code was executed')\n")
    with pytest.raises(UserError, match="trust_remote_code"):
        build_policy(ModelConfig(name_or_path=str(folder)), need_reference=False)


@pytest.mark.parametrize("kw, match", [
    ({"name_or_path": "/no/such/model"}, "no such folder"),
    ({"adapter_path": "."}, "adapter_config.json"),
])
def test_bad_settings_are_user_errors(tiny_llama_path, kw, match):
    cfg = ModelConfig(**{"name_or_path": str(tiny_llama_path), **kw})
    with pytest.raises(UserError, match=match):
        build_policy(cfg, need_reference=False)


@pytest.mark.parametrize("command", ["train", "eval"])
@pytest.mark.parametrize("overrides, match", [
    (["model.quantization=nf4", "model.lora.enabled=false"], "lora.enabled"),
    (["model.adapter_path=/tmp", "model.lora.enabled=false"], "adapter_path"),
])
def test_settings_that_need_lora_are_refused_by_the_config(command, overrides, match):
    """build_policy trusts these rules: the config refuses them before any model loads."""
    with pytest.raises(UserError, match=match):
        compose_config(command, overrides, for_training=command == "train")

"""The fused LoRA forward (fused_lora.py) equals peft's: outputs and every LoRA gradient."""

from __future__ import annotations

import pytest
import torch
from lora_policy import lora_policy

from grpo_cli.config.schema import LoraConfig, ModelConfig
from grpo_cli.policy.fused_lora import fuse_lora_layers
from grpo_cli.policy.model import build_policy

IDS = torch.tensor([[5, 17, 42, 99, 7, 300, 12, 64], [8, 9, 10, 11, 120, 13, 14, 15]])  # [2, 8]


def _pair(path, quantization):
    """The same LoRA policy twice: with the fused forward (build_policy) and with peft's."""
    out = [lora_policy(path, quantization, r=4, std=0.3) for _ in range(2)]
    plain = out[1].model
    for module in plain.modules():  # undo the fusing on the second copy
        if hasattr(module, "_plain_forward"):
            module.forward = module._plain_forward
    return out[0], out[1]


def _loss_and_grads(model):
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=IDS).logits  # [2, 8, V]
    loss = torch.log_softmax(logits, -1)[..., 3].sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return logits.detach(), grads


@pytest.mark.parametrize("arch,quantization", [
    ("tiny_llama_path", "none"), ("tiny_qwen2_path", "none"), ("tiny_llama_path", "nf4"),
])
def test_fused_forward_and_gradients_equal_peft(request, arch, quantization):
    fused, plain = _pair(request.getfixturevalue(arch), quantization)
    assert sum(hasattr(m, "_plain_forward") for m in fused.model.modules()) > 0
    lf, gf = _loss_and_grads(fused.model)
    lp, gp = _loss_and_grads(plain.model)
    assert torch.allclose(lf, lp, atol=1e-5)
    assert gf.keys() == gp.keys() and len(gf) > 0
    for name in gf:
        assert torch.allclose(gf[name], gp[name], atol=1e-5, rtol=1e-4), name


def test_adapters_off_runs_the_base_alone(tiny_llama_path):
    fused, plain = _pair(tiny_llama_path, "none")
    with fused.reference() as ref_f, plain.reference() as ref_p:
        assert torch.allclose(ref_f(input_ids=IDS).logits, ref_p(input_ids=IDS).logits)
    with torch.no_grad():
        assert not torch.allclose(fused.model(input_ids=IDS).logits,
                                  _base_logits(fused), atol=1e-3)


def _base_logits(policy):
    with policy.reference() as ref:
        return ref(input_ids=IDS).logits


def test_dropout_layers_are_left_to_peft(tiny_llama_path):
    cfg = ModelConfig(name_or_path=str(tiny_llama_path), dtype="fp32",
                      lora=LoraConfig(r=4, alpha=8.0, dropout=0.1))
    policy = build_policy(cfg, need_reference=False)
    assert not any(hasattr(m, "_plain_forward") for m in policy.model.modules())
    assert fuse_lora_layers(policy.model) == 0

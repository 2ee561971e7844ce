"""The fast paths give what the plain ones give.

- rollout.sample_tokens (prefill once per prompt, cache copied G times, finished rows dropped)
  emits the same tokens as transformers' generate: greedy, with EOS and min_new_tokens, and
  sampled with a fixed seed (with transformers' multinomial draw; the default inverse-CDF
  draw is checked against the same distribution in test_sampling.py); its logit warpers
  equal transformers' ones exactly.
- logprobs.completion_logprobs with shared prompts (one prompt pass, completions on its copied
  cache) gives the plain full-sequence log-probs, entropies and gradients.
"""

from __future__ import annotations

import pytest
import torch

from grpo_cli.algo import logprobs as lp
from grpo_cli.rollout.engine import SamplingSettings, eos_token_ids
from grpo_cli.rollout.hf import draw_multinomial, process_logits, sample_tokens

PROMPTS = ["What is 2 + 3?", "Natalia sold clips to 48 of her friends in April"]


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def tiny(request, tiny_llama_path, tiny_qwen2_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = {"llama": tiny_llama_path, "qwen2": tiny_qwen2_path}[request.param]
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    enc = tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    return model, tok, enc


def hf_generate(model, enc, n: int, **kw) -> torch.Tensor:
    """transformers' generate on each prompt repeated n times; completion ids only."""
    ids = enc["input_ids"].repeat_interleave(n, dim=0)
    mask = enc["attention_mask"].repeat_interleave(n, dim=0)
    out = model.generate(input_ids=ids, attention_mask=mask, **kw)
    return out[:, ids.shape[1]:]


def test_greedy_matches_generate(tiny):
    model, tok, enc = tiny
    eos = eos_token_ids(model, tok)
    ref = hf_generate(model, enc, 3, max_new_tokens=12, do_sample=False, eos_token_id=eos,
                      pad_token_id=tok.pad_token_id)
    got = sample_tokens(model, enc["input_ids"], enc["attention_mask"],
                        SamplingSettings(num_samples=3, max_new_tokens=12, greedy=True),
                        eos_ids=eos, pad_id=tok.pad_token_id)
    assert torch.equal(got, ref)


@pytest.mark.parametrize("min_new", [0, 7])
def test_greedy_rows_ending_at_different_steps(tiny, min_new):
    """An EOS that prompt 0 emits mid-way (and prompt 1 later or never): rows leave early."""
    model, tok, enc = tiny
    free = hf_generate(model, enc, 1, max_new_tokens=14, do_sample=False, eos_token_id=[],
                       pad_token_id=tok.pad_token_id)
    eos = [int(free[0, 3])]
    ref = hf_generate(model, enc, 2, max_new_tokens=14, min_new_tokens=min_new, do_sample=False,
                      eos_token_id=eos, pad_token_id=tok.pad_token_id)
    got = sample_tokens(model, enc["input_ids"], enc["attention_mask"],
                        SamplingSettings(num_samples=2, max_new_tokens=14,
                                         min_new_tokens=min_new, greedy=True),
                        eos_ids=eos, pad_id=tok.pad_token_id)
    assert torch.equal(got, ref)
    assert got.shape[1] >= min_new


def test_sampling_matches_generate_with_a_fixed_seed(tiny):
    model, tok, enc = tiny
    kw = dict(temperature=0.7, top_k=20, top_p=0.9)
    torch.manual_seed(123)
    ref = hf_generate(model, enc, 4, max_new_tokens=10, min_new_tokens=10, do_sample=True,
                      eos_token_id=eos_token_ids(model, tok), pad_token_id=tok.pad_token_id,
                      **kw)
    torch.manual_seed(123)
    got = sample_tokens(model, enc["input_ids"], enc["attention_mask"],
                        SamplingSettings(num_samples=4, max_new_tokens=10, min_new_tokens=10,
                                         **kw),
                        eos_ids=eos_token_ids(model, tok), pad_id=tok.pad_token_id,
                        draw=draw_multinomial)
    assert torch.equal(got, ref)


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (1.0, 0, 1.0), (0.7, 0, 1.0), (1.0, 5, 1.0), (1.3, 0, 0.8), (0.6, 12, 0.5), (1.0, 1, 0.3),
])
def test_warpers_equal_transformers(temperature, top_k, top_p):
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 50, generator=g)
    scores[0, :10] = scores[0, 10]  # ties at the cut-off
    hf = LogitsProcessorList()
    if temperature != 1.0:
        hf.append(TemperatureLogitsWarper(temperature))
    if top_k:
        hf.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        hf.append(TopPLogitsWarper(top_p))
    ref = hf(torch.zeros(6, 1, dtype=torch.long), scores.clone())
    got = process_logits(scores.clone(), temperature=temperature, top_k=top_k, top_p=top_p)
    assert torch.equal(got, ref)


# ----------------------------------------------------------------------------- log-probs

def _lora(path, seed=0):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    return get_peft_model(base, cfg)


def _grouped_batch(P=7, L=5, G=3):
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(5, 300, (2, P), generator=g)
    pmask = torch.ones(2, P, dtype=torch.long)
    pmask[1, :3] = 0  # a left-padded prompt
    ids = torch.cat([prompts.repeat_interleave(G, 0),
                     torch.randint(5, 300, (2 * G, L), generator=g)], dim=1)  # [N, P+L]
    mask = torch.cat([pmask.repeat_interleave(G, 0),
                      torch.ones(2 * G, L, dtype=torch.long)], dim=1)  # [N, P+L]
    mask[0, -2:] = 0  # a completion that ended early (right padding)
    return ids, mask, L


def _logprobs_and_grads(model, ids, mask, L, share: bool, mbs: int, monkeypatch):
    with monkeypatch.context() as mp:
        if not share:
            mp.setattr(lp, "prompt_groups", lambda *a: None)
        logp, ent = lp.completion_logprobs(model, ids, mask, L, 0.7, mbs, with_entropy=True)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad((logp * mask[:, -L:]).sum(), params)
    return logp.detach(), ent, grads


@pytest.mark.parametrize("arch,mbs", [("qwen2", 6), ("llama", 4)])
def test_shared_prompt_logprobs_equal_plain(arch, mbs, tiny_llama_path, tiny_qwen2_path,
                                            monkeypatch):
    model = _lora({"llama": tiny_llama_path, "qwen2": tiny_qwen2_path}[arch]).train()
    ids, mask, L = _grouped_batch()
    plain = _logprobs_and_grads(model, ids, mask, L, False, mbs, monkeypatch)
    shared = _logprobs_and_grads(model, ids, mask, L, True, mbs, monkeypatch)
    torch.testing.assert_close(shared[0], plain[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared[1], plain[1], atol=1e-5, rtol=1e-5)
    for a, b in zip(shared[2], plain[2]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_shared_prompt_no_grad_and_one_token(tiny_qwen2_path):
    model = _lora(tiny_qwen2_path).eval()
    ids, mask, _ = _grouped_batch(L=1)
    with torch.no_grad():
        shared, _ = lp.completion_logprobs(model, ids, mask, 1, 1.0, 6)
        plain = torch.cat([lp._forward_plain(model, ids, mask, 1, None)[0][0]
                           .log_softmax(-1).gather(-1, ids[:, -1:, None]).squeeze(-1)])
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=1e-5)


def test_prompt_groups():
    ids = torch.tensor([[1, 2, 9], [1, 2, 8], [3, 2, 7], [3, 2, 7], [1, 2, 6]])
    mask = torch.ones_like(ids)
    assert lp.prompt_groups(ids, mask, 1).tolist() == [0, 0, 1, 1, 2]
    assert lp.prompt_groups(ids[[0, 2, 4]], mask[[0, 2, 4]], 1) is None
    mask[1, 0] = 0  # same ids, different padding: not the same prompt
    assert lp.prompt_groups(ids, mask, 1).tolist() == [0, 1, 2, 2, 3]


def test_checkpointing_uses_the_plain_path(tiny_qwen2_path, monkeypatch):
    model = _lora(tiny_qwen2_path)
    model.activation_checkpointing_enable(
        activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    called = []
    monkeypatch.setattr(lp, "_forward_shared", lambda *a: called.append(1))
    ids, mask, L = _grouped_batch()
    logp, _ = lp.completion_logprobs(model, ids, mask, L, 1.0, 6)
    assert not called and logp.shape == (6, L) and logp.requires_grad

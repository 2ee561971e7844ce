"""The default token draw (inverse CDF) samples softmax(scores) exactly, like multinomial,
and sample_tokens' sampler log-probs are the trainer's log-probs of the drawn tokens."""

from __future__ import annotations

import math

import pytest
import torch

from grpo_cli.algo import logprobs as lp
from grpo_cli.rollout.hf import draw_inverse_cdf, draw_multinomial, process_logits, sample_tokens
from grpo_cli.rollout.settings import SamplingSettings


def _frequencies(draw, scores: torch.Tensor, n: int) -> torch.Tensor:
    rows = scores.expand(n, -1).contiguous()  # [n, V]
    return torch.bincount(draw(rows), minlength=scores.shape[-1]).double() / n  # [V]


@pytest.mark.parametrize("draw", [draw_inverse_cdf, draw_multinomial])
def test_draw_matches_softmax_frequencies(draw):
    torch.manual_seed(0)
    scores = torch.tensor([[2.0, 0.5, -1.0, float("-inf"), 1.0, -30.0, 0.0, float("-inf")]])
    p = scores.softmax(-1)[0].double()  # [V]
    n = 200_000
    freq = _frequencies(draw, scores, n)
    sigma = (p * (1 - p) / n).sqrt()  # binomial standard error per token
    assert torch.all((freq - p).abs() <= 5 * sigma + 1e-12), (freq, p)
    assert freq[3] == 0 and freq[7] == 0  # -inf tokens are never drawn


def test_draw_after_top_k_top_p_masks_never_leaves_the_kept_set():
    torch.manual_seed(1)
    scores = torch.randn(64, 500)
    kept = process_logits(scores, temperature=0.8, top_k=20, top_p=0.7)  # [64, 500]
    for _ in range(20):
        picked = draw_inverse_cdf(kept)  # [64]
        assert torch.isfinite(kept.gather(1, picked[:, None])).all()


def test_draw_handles_one_token_and_uniform_rows():
    one = torch.full((3, 10), float("-inf"))
    one[:, 6] = 0.0
    assert draw_inverse_cdf(one).tolist() == [6, 6, 6]
    torch.manual_seed(2)
    freq = _frequencies(draw_inverse_cdf, torch.zeros(1, 4), 40_000)
    assert torch.allclose(freq, torch.full((4,), 0.25, dtype=torch.float64), atol=0.01)


def test_draw_keeps_the_share_of_very_unlikely_tokens(monkeypatch):
    """float64 cumulative sums: a token of probability ~2e-10 after 50,000 likely ones keeps
    its own interval of the CDF (in a float32 running sum it would round away), so the
    uniform number that falls inside that interval draws it."""
    V = 50_000
    scores = torch.zeros(1, V)
    scores[0, -1] = math.log(1e-5)  # weight 1e-5 next to 49,999 weights of 1
    total = (V - 1) + 1e-5
    inside = ((V - 1) + 0.5e-5) / total  # the uniform number mid-way into its interval
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.full(*a, inside, **k))
    assert int(draw_inverse_cdf(scores)) == V - 1
    just_before = ((V - 1) - 0.5) / total
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.full(*a, just_before, **k))
    assert int(draw_inverse_cdf(scores)) == V - 2


def test_sampler_logprobs_equal_trainer_logprobs(tiny_llama_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path, dtype=torch.float32).eval()
    enc = tok(["What is 2 + 3?", "Natalia sold clips"], return_tensors="pt", padding=True,
              add_special_tokens=False)
    torch.manual_seed(5)
    eos = [tok.eos_token_id]
    sampling = SamplingSettings(num_samples=3, max_new_tokens=9, temperature=0.7, top_k=30,
                                min_new_tokens=4)
    ids, logp = sample_tokens(model, enc["input_ids"], enc["attention_mask"], sampling,
                              eos_ids=eos, pad_id=tok.pad_token_id, with_logprobs=True)
    assert ids.shape == logp.shape
    full = torch.cat([enc["input_ids"].repeat_interleave(3, 0), ids], dim=1)
    mask = torch.cat([enc["attention_mask"].repeat_interleave(3, 0), torch.ones_like(ids)], 1)
    with torch.no_grad():
        ref, _ = lp.completion_logprobs(model, full, mask, ids.shape[1], 0.7, 6)  # [6, T]
    ended = torch.isin(ids, torch.tensor(eos))
    live = (ended.long().cumsum(1) - ended.long()) == 0  # up to and including the first EOS
    assert torch.allclose(logp[live], ref[live], atol=1e-4)
    assert torch.all(logp[~live] == 0)

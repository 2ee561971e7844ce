"""Checks of grpo_cli.algo.logprobs against naive full-tensor computations on a tiny Llama."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from grpo_cli.algo.logprobs import (
    completion_logprobs,
    logprobs_and_entropy,
    position_ids_from_mask,
    selective_log_softmax,
)

VOCAB = 64


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return LlamaForCausalLM(config).float().eval()


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 7, 12, 100])
def test_selective_log_softmax_matches_full(chunk_size: int) -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 11) * 3  # [B, L, V], 12 rows
    ids = torch.randint(0, 11, (3, 4))  # [B, L]
    expected = torch.log_softmax(logits / 0.7, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    got = selective_log_softmax(logits, ids, chunk_size=chunk_size, temperature=0.7)
    torch.testing.assert_close(got, expected)
    # bf16 input comes back float32
    got = selective_log_softmax(logits.bfloat16(), ids, chunk_size=chunk_size)
    assert got.dtype == torch.float32


@pytest.mark.parametrize("chunk_size", [1, 5, 12])
def test_entropy_matches_full(chunk_size: int) -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 11)  # [B, L, V]
    ids = torch.randint(0, 11, (3, 4))
    logp = torch.log_softmax(logits, -1)  # [B, L, V]
    expected = -(logp.exp() * logp).sum(-1)  # [B, L]
    picked, ent = logprobs_and_entropy(logits, ids, chunk_size=chunk_size)
    torch.testing.assert_close(ent, expected)
    torch.testing.assert_close(picked, logp.gather(-1, ids[..., None]).squeeze(-1))
    # uniform logits: entropy ln V
    _, ent = logprobs_and_entropy(torch.zeros(2, 11), torch.zeros(2, dtype=torch.long))
    assert ent.tolist() == pytest.approx([2.3978953] * 2)


@pytest.mark.parametrize(("chunk_size", "temperature"), [(1, 1.0), (5, 0.7), (12, 1.3)])
def test_entropy_gradient_matches_plain_autograd(chunk_size: int, temperature: float) -> None:
    # d/dlogits of sum(a * logp + b * H) through the chunked backward vs autograd of the
    # full log_softmax (b = 0 is the plain log-prob gradient; the entropy alone too).
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 11, dtype=torch.float64)  # [B, L, V]
    ids = torch.randint(0, 11, (3, 4))
    a, b = torch.randn(3, 4), torch.randn(3, 4)  # [B, L]
    ref_in = logits.clone().requires_grad_(True)
    logp_all = torch.log_softmax(ref_in / temperature, -1)  # [B, L, V]
    ref_ent = -(logp_all.exp() * logp_all).sum(-1)  # [B, L]
    ref_logp = logp_all.gather(-1, ids[..., None]).squeeze(-1)  # [B, L]
    for wa, wb in ((a, b), (a, 0 * b), (0 * a, b)):
        (want,) = torch.autograd.grad((wa * ref_logp + wb * ref_ent).sum(), ref_in,
                                      retain_graph=True)
        x = logits.float().requires_grad_(True)
        logp, ent = logprobs_and_entropy(x, ids, chunk_size=chunk_size,
                                         temperature=temperature, entropy_grad=True)
        terms = [t for t, w in ((wa * logp, wa), (wb * ent, wb)) if w.abs().sum() > 0]
        (got,) = torch.autograd.grad(sum(t.sum() for t in terms), x)
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-4)
    # without entropy_grad the entropy stays a detached metric
    _, ent = logprobs_and_entropy(logits.float().requires_grad_(True), ids)
    assert not ent.requires_grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("chunk_size", "temperature"), [(1, 1.0), (5, 0.7), (12, 1.3), (7, 1.0)])
def test_selective_log_softmax_gradient_matches_autograd(chunk_size, temperature, dtype) -> None:
    """The custom backward equals autograd through the plain full log-softmax."""
    torch.manual_seed(1)
    base = (torch.randn(3, 4, 11) * 2).to(dtype)
    ids = torch.randint(0, 11, (3, 4))
    weights = torch.randn(3, 4)  # a non-uniform upstream gradient
    x1 = base.clone().requires_grad_(True)
    (selective_log_softmax(x1, ids, chunk_size, temperature) * weights).sum().backward()
    x2 = base.clone().requires_grad_(True)
    full = torch.log_softmax(x2.float() / temperature, -1).gather(-1, ids[..., None])
    (full.squeeze(-1) * weights).sum().backward()
    assert x1.grad.dtype == dtype
    tol = dict(atol=1e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(x1.grad, x2.grad, **tol)


def test_selective_log_softmax_leaves_the_logits_alone() -> None:
    logits = torch.randn(6, 9, requires_grad=True)
    before = logits.detach().clone()
    selective_log_softmax(logits, torch.arange(6), chunk_size=4).sum().backward()
    assert torch.equal(logits.detach(), before)
    assert selective_log_softmax(torch.zeros(0, 9), torch.zeros(0, dtype=torch.long)).shape == (0,)


def _naive(model, ids: torch.Tensor, completion_len: int, temperature: float) -> torch.Tensor:
    """Full logits over every position, then slice the completion (unpadded rows only)."""
    with torch.no_grad():
        logits = model(input_ids=ids).logits  # [N, P+L, V]
    logp = torch.log_softmax(logits.float() / temperature, -1)  # [N, P+L, V]
    logp = logp[:, -completion_len - 1 : -1]  # [N, L, V]
    return logp.gather(-1, ids[:, -completion_len:].unsqueeze(-1)).squeeze(-1)  # [N, L]


def test_completion_logprobs_match_naive(model) -> None:
    torch.manual_seed(1)
    ids = torch.randint(1, VOCAB, (3, 9))  # [N, P+L], P=5, L=4
    mask = torch.ones_like(ids)
    with torch.no_grad():
        logp, entropy = completion_logprobs(
            model,
            ids,
            mask,
            4,
            temperature=0.8,
            micro_batch_size=2,
            chunk_size=3,
            with_entropy=True,
        )
    torch.testing.assert_close(logp, _naive(model, ids, 4, 0.8), atol=1e-5, rtol=1e-5)
    assert entropy is not None and entropy.shape == (3, 4)
    assert (entropy > 0).all()


def test_micro_batch_size_does_not_matter(model) -> None:
    torch.manual_seed(2)
    ids = torch.randint(1, VOCAB, (4, 8))  # [N, P+L]
    mask = torch.ones_like(ids)
    with torch.no_grad():
        one, _ = completion_logprobs(model, ids, mask, 3, 1.0, micro_batch_size=1)
        all_rows, _ = completion_logprobs(model, ids, mask, 3, 1.0, micro_batch_size=4)
    torch.testing.assert_close(one, all_rows, atol=1e-5, rtol=1e-5)


def test_position_ids_from_mask() -> None:
    # left padding: [pad, pad, a, b] -> positions [0, 0, 0, 1]; cumsum [0,0,1,2] - 1, clamped
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]


def test_left_padding_matches_unpadded(model) -> None:
    # (RoPE is relative, so on Llama this checks the padding mask more than the positions.)
    torch.manual_seed(3)
    long_row = torch.randint(1, VOCAB, (9,))  # prompt 5 + completion 4
    short_row = torch.randint(1, VOCAB, (7,))  # prompt 3 + completion 4
    pad = torch.zeros(2, dtype=torch.long)
    ids = torch.stack([long_row, torch.cat([pad, short_row])])  # [2, 9]
    mask = torch.stack([torch.ones(9), torch.cat([torch.zeros(2), torch.ones(7)])]).long()
    with torch.no_grad():
        batched, _ = completion_logprobs(model, ids, mask, 4, 1.0, micro_batch_size=2)
        alone, _ = completion_logprobs(
            model, short_row[None], torch.ones(1, 7, dtype=torch.long), 4, 1.0, micro_batch_size=1
        )
    torch.testing.assert_close(batched[1:], alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        batched[1:], _naive(model, short_row[None], 4, 1.0), atol=1e-5, rtol=0
    )


def test_gradient_flows(model) -> None:
    ids = torch.randint(1, VOCAB, (2, 6))
    logp, _ = completion_logprobs(model, ids, torch.ones_like(ids), 2, 1.0, micro_batch_size=1)
    assert logp.requires_grad
    logp.sum().backward()
    grad = model.model.embed_tokens.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_bad_completion_len(model) -> None:
    ids = torch.randint(1, VOCAB, (1, 4))
    with pytest.raises(ValueError, match="completion_len"):
        completion_logprobs(model, ids, torch.ones_like(ids), 4, 1.0, micro_batch_size=1)


@pytest.mark.parametrize("scale", [30.0, 1000.0])
def test_entropy_is_stable_at_large_logits(scale: float) -> None:
    # Logits [0, -1, -2, -3] * scale / 30 plus a constant offset of `scale` (which changes
    # nothing mathematically); the reference entropy is computed in float64 without it.
    base = torch.tensor([[0.0, -1.0, -2.0, -3.0], [0.5, 0.5, -0.5, 0.0]]) * scale / 30
    logits = (base + scale).float()  # [2, 4]
    ref_logp = torch.log_softmax(base.double(), dim=-1)
    ref = -(ref_logp.exp() * ref_logp).sum(-1)  # [2]
    _, ent = logprobs_and_entropy(logits, torch.zeros(2, dtype=torch.long))
    # lse - sum(p * z) is off by 1e-5 at scale 30 and 3e-2 at 1000 (float32 cancellation).
    assert torch.allclose(ent.double(), ref, rtol=0, atol=1e-6 * scale / 30), (ent, ref)

"""Per-token log-probabilities (and entropies) of completions, computed memory-consciously.

For a completion token ``y_t`` following context ``x_{<t}``::

    logp_t = z[y_t] / T - logsumexp(z / T)        z = lm-head logits at position t-1

with ``T`` the sampling temperature: the log-probs must describe the distribution the sampler
drew from, so they use the same temperature (and no top-p/top-k masking).

Memory: the lm-head output ``[N, L, V]`` is usually in bf16; a float32 log-softmax of all of
it would double it again. :func:`selective_log_softmax` instead upcasts ``chunk_size`` rows
at a time, gathers the chosen logit and subtracts the row's logsumexp, so the full float32
``[N, L, V]`` log-softmax is never materialised. (Under grad mode autograd still keeps each
float32 chunk for the backward pass; ``micro_batch_size`` bounds that.)

:func:`completion_logprobs` runs the model in micro-batches with ``logits_to_keep=L+1`` so
the lm head is applied only at the positions that predict completion tokens, and passes
``position_ids`` derived from the attention mask so left-padded rows match unpadded ones.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "completion_logprobs",
    "entropy_from_logits",
    "position_ids_from_mask",
    "selective_log_softmax",
]

DEFAULT_CHUNK_SIZE = 512  # rows (tokens) upcast to float32 at a time


def selective_log_softmax(
    logits: Tensor, ids: Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE, temperature: float = 1.0
) -> Tensor:
    """``log_softmax(logits / temperature).gather(-1, ids)`` in float32, chunked over rows.

    Args:
        logits: ``[..., V]`` in any float dtype.
        ids: ``[...]`` integer token ids (same leading shape as ``logits``).
        chunk_size: rows of ``[-1, V]`` upcast at a time.
        temperature: logits are divided by it (after the float32 upcast).

    Returns:
        ``[...]`` float32 log-probabilities of ``ids``.
    """
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab)  # [R, V]
    flat_ids = ids.reshape(-1, 1).long()  # [R, 1]
    out = []
    for start in range(0, flat_logits.shape[0], chunk_size):
        chunk = flat_logits[start : start + chunk_size].float() / temperature  # [c, V]
        picked = chunk.gather(-1, flat_ids[start : start + chunk_size]).squeeze(-1)  # [c]
        out.append(picked - torch.logsumexp(chunk, dim=-1))  # [c]
    if not out:
        return logits.new_zeros(ids.shape, dtype=torch.float32)  # [...]
    return torch.cat(out).view(ids.shape)  # [...]


def entropy_from_logits(
    logits: Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE, temperature: float = 1.0
) -> Tensor:
    """Entropy ``-sum_v p_v log p_v`` of ``softmax(logits / temperature)``, chunked over rows.

    Args:
        logits: ``[..., V]``.

    Returns:
        ``[...]`` float32 entropies.
    """
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab)  # [R, V]
    out = []
    for start in range(0, flat_logits.shape[0], chunk_size):
        chunk = flat_logits[start : start + chunk_size].float() / temperature  # [c, V]
        logp = torch.log_softmax(chunk, dim=-1)  # [c, V]
        out.append(-(logp.exp() * logp).sum(dim=-1))  # [c]
    if not out:
        return logits.new_zeros(logits.shape[:-1], dtype=torch.float32)  # [...]
    return torch.cat(out).view(logits.shape[:-1])  # [...]


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions counted over real tokens only: ``cumsum(mask) - 1``, clamped at 0.

    A left-padded row ``[pad, pad, a, b]`` gets ``[0, 0, 0, 1]``, the same positions its
    tokens have unpadded.
    """
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)  # [N, P+L]


def completion_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_len: int,
    temperature: float,
    micro_batch_size: int,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    with_entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs of the last ``completion_len`` tokens of each row under ``model``.

    Grad flows if called under grad mode; wrap in ``torch.no_grad()`` for old/ref log-probs.

    Args:
        model: a causal LM (transformers, optionally PEFT-wrapped) accepting
            ``logits_to_keep`` and ``position_ids``.
        input_ids: ``[N, P+L]`` prompt (left-padded) followed by the completion.
        attention_mask: ``[N, P+L]`` 1 for real tokens, 0 for padding.
        completion_len: L; the completion is the last L positions.
        temperature: the sampler's temperature.
        micro_batch_size: rows per forward pass.
        chunk_size: rows upcast to float32 at a time in the log-softmax.
        with_entropy: also return per-token entropies.

    Returns:
        ``(logp, entropy)``: ``[N, L]`` float32 each; ``entropy`` is None unless requested
        and is always detached (a metric, not part of the loss).
    """
    if completion_len < 1 or completion_len >= input_ids.shape[1]:
        raise ValueError(
            f"completion_len must be in [1, {input_ids.shape[1] - 1}], got {completion_len}"
        )
    if micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
    logps, entropies = [], []
    for start in range(0, input_ids.shape[0], micro_batch_size):
        ids = input_ids[start : start + micro_batch_size]  # [n, P+L]
        mask = attention_mask[start : start + micro_batch_size]  # [n, P+L]
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask),
            logits_to_keep=completion_len + 1,
            use_cache=False,
        )
        # Logits at position t predict token t+1: the first kept one predicts the first
        # completion token, the last kept one (after the final token) is dropped.
        logits = out.logits[:, -(completion_len + 1) : -1, :]  # [n, L, V]
        targets = ids[:, -completion_len:]  # [n, L]
        logps.append(selective_log_softmax(logits, targets, chunk_size, temperature))  # [n, L]
        if with_entropy:
            with torch.no_grad():  # entropy is a metric: no graph kept for it
                entropies.append(entropy_from_logits(logits, chunk_size, temperature))  # [n, L]
    logp = torch.cat(logps)  # [N, L]
    entropy = torch.cat(entropies) if with_entropy else None  # [N, L]
    return logp, entropy

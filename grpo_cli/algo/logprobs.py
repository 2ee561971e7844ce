"""Per-token log-probabilities (and entropies) of completions, computed memory-consciously.

For a completion token ``y_t`` following context ``x_{<t}``::

    logp_t = z[y_t] / T - logsumexp(z / T)        z = lm-head logits at position t-1

with ``T`` the sampling temperature: the log-probs must describe the distribution the sampler
drew from, so they use the same temperature (and no top-p/top-k masking).

Memory: the lm-head output ``[N, L, V]`` is usually in bf16; a float32 log-softmax of all of
it would double it again. :func:`selective_log_softmax` instead upcasts ``chunk_size`` rows
at a time, gathers the chosen logit and subtracts the row's logsumexp, so the full float32
``[N, L, V]`` log-softmax is never materialised, in the forward or the backward pass (a
custom autograd function keeps only the logits and one logsumexp per row, and rebuilds each
float32 chunk for the gradient). The entropies come from the same pass: a metric, or with
their gradient an entropy bonus.

:func:`completion_logprobs` runs the model in micro-batches with ``logits_to_keep=L+1`` so
the lm head is applied only at the positions that predict completion tokens, and passes
``position_ids`` derived from the attention mask so left-padded rows match unpadded ones.

Shared prompts: GRPO's G completions of one prompt sit in consecutive rows with the same
prompt tokens. When a micro-batch has such rows (and activation checkpointing is off, which
drops caches), :func:`completion_logprobs` runs each distinct prompt once, copies its KV
cache to the rows that share it, and runs only the completion tokens on top: for 8 samples
of a 60-token prompt and 64-token completions that is ~40% fewer tokens through the model,
in the no-grad reference pass and in the training forward and backward alike (gradients
flow back through the copied cache to the one prompt pass). The log-probs are the same as
the plain full-sequence pass up to float rounding (tests/rollout/test_fastpaths.py).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "completion_logprobs",
    "logprobs_and_entropy",
    "position_ids_from_mask",
    "prompt_groups",
    "selective_log_softmax",
]

DEFAULT_CHUNK_SIZE = 512  # rows (tokens) upcast to float32 at a time


def _scaled(logits: Tensor, temperature: float) -> Tensor:
    """float32 ``logits / temperature``; no copy (and nothing extra kept for backward) at 1."""
    logits = logits.float()  # [c, V]
    return logits if temperature == 1.0 else logits / temperature  # [c, V]


class _ChunkedLogProb(torch.autograd.Function):
    """``log_softmax(logits / T)[ids]`` over ``[R, V]`` rows, ``chunk`` rows at a time.

    Forward keeps only the input logits and the per-row logsumexp; backward rebuilds one
    float32 chunk at a time and writes ``(onehot(ids) - softmax) * grad / T`` straight into
    a single ``[R, V]`` gradient. Plain autograd through chunked slices would instead keep
    every float32 chunk alive until the backward pass and allocate a zero-filled ``[R, V]``
    per chunk (slice and gather backward). With ``entropy=True`` the per-row entropy
    ``-sum(p * log p)`` comes from the same pass, with ``log p = z - lse`` formed first:
    ``lse - sum(p * z)`` is the same number but subtracts two values of the logits' size,
    and loses ~0.15 nats to float32 cancellation at logit scale 1000. It has a gradient only
    with ``entropy_grad`` (an entropy bonus in the loss): ``dH/dz_v = -p_v (log p_v + H)``,
    rebuilt per chunk in the same backward loop (``z = logits / T``, so divided by ``T``).
    """

    @staticmethod
    def forward(ctx, logits: Tensor, ids: Tensor, chunk: int, temperature: float,
                entropy: bool, entropy_grad: bool = False) -> tuple[Tensor, Tensor]:
        lses, picked, ents = [], [], []
        for start in range(0, logits.shape[0], chunk):
            z = _scaled(logits[start : start + chunk], temperature)  # [c, V]
            lse = torch.logsumexp(z, dim=-1)  # [c]
            lses.append(lse)
            picked.append(z.gather(-1, ids[start : start + chunk, None]).squeeze(-1) - lse)
            if entropy:
                logp = torch.sub(z, lse[:, None])  # [c, V]
                ents.append(-(logp.exp() * logp).sum(dim=-1))  # [c]
        lse_all = torch.cat(lses)  # [R]
        ctx.save_for_backward(logits, ids, lse_all)
        ctx.chunk, ctx.temperature = chunk, temperature
        ent = torch.cat(ents) if entropy else lse_all.new_zeros(0)
        if not (entropy and entropy_grad):
            ctx.mark_non_differentiable(ent)
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None
        return torch.cat(picked), ent  # [R], [R] or [0]

    @staticmethod
    def backward(ctx, grad: Tensor | None, grad_ent: Tensor | None):  # [R] each
        logits, ids, lse = ctx.saved_tensors
        chunk, temperature = ctx.chunk, ctx.temperature
        out = torch.empty_like(logits)  # [R, V] in the logits' dtype
        if grad is None:
            grad = lse.new_zeros(lse.shape)  # [R]
        for start in range(0, logits.shape[0], chunk):
            end = start + chunk
            z = _scaled(logits[start:end], temperature)  # [c, V]
            g = grad[start:end, None].float()  # [c, 1]
            if grad_ent is None:
                d = torch.sub(z, lse[start:end, None]).exp_().mul_(-g)  # -softmax * grad
            else:
                logp = torch.sub(z, lse[start:end, None])  # [c, V]
                prob = logp.exp()  # [c, V]
                ent = -(prob * logp).sum(dim=-1, keepdim=True)  # [c, 1]
                ge = grad_ent[start:end, None].float()  # [c, 1]
                # -g_H p (log p + H) - g p, in place: two float32 chunks alive, not four
                d = logp.add_(ent).mul_(prob).mul_(-ge).sub_(prob.mul_(g))  # [c, V]
            d.scatter_add_(-1, ids[start:end, None], g)  # + onehot * grad
            if temperature != 1.0:
                d.div_(temperature)
            out[start:end] = d
        return out, None, None, None, None, None


def logprobs_and_entropy(logits: Tensor, ids: Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE,
                         temperature: float = 1.0, entropy: bool = True,
                         entropy_grad: bool = False) -> tuple[Tensor, Tensor | None]:
    """:func:`selective_log_softmax` and, with ``entropy``, the per-row entropy
    ``-sum_v p_v log p_v`` of ``softmax(logits / temperature)`` from the same pass: detached,
    or differentiable w.r.t. ``logits`` with ``entropy_grad`` (for an entropy bonus)."""
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab)  # [R, V]
    flat_ids = ids.reshape(-1).long()  # [R]
    if flat_logits.shape[0] == 0:
        empty = logits.new_zeros(ids.shape, dtype=torch.float32)  # [...]
        return empty, (empty.clone() if entropy else None)
    picked, ent = _ChunkedLogProb.apply(flat_logits, flat_ids, chunk_size, temperature, entropy,
                                        entropy_grad)
    return picked.view(ids.shape), (ent.view(ids.shape) if entropy else None)


def selective_log_softmax(
    logits: Tensor, ids: Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE, temperature: float = 1.0
) -> Tensor:
    """``log_softmax(logits / temperature).gather(-1, ids)`` in float32, chunked over rows.

    Args:
        logits: ``[..., V]`` in any float dtype.
        ids: ``[...]`` integer token ids (same leading shape as ``logits``).
        chunk_size: rows of ``[-1, V]`` upcast at a time (forward and backward).
        temperature: logits are divided by it (after the float32 upcast).

    Returns:
        ``[...]`` float32 log-probabilities of ``ids`` (differentiable w.r.t. ``logits``).
    """
    return logprobs_and_entropy(logits, ids, chunk_size, temperature, entropy=False)[0]


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
    entropy_grad: bool = False,
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
        entropy_grad: the entropies carry a gradient (an entropy bonus in the loss).

    Returns:
        ``(logp, entropy)``: ``[N, L]`` float32 each; ``entropy`` is None unless requested,
        and detached (a metric) unless ``entropy_grad``.
    """
    if completion_len < 1 or completion_len >= input_ids.shape[1]:
        raise ValueError(
            f"completion_len must be in [1, {input_ids.shape[1] - 1}], got {completion_len}"
        )
    if micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
    share = not _checkpointing_active(model)
    logps, entropies = [], []
    for start in range(0, input_ids.shape[0], micro_batch_size):
        ids = input_ids[start : start + micro_batch_size]  # [n, P+L]
        mask = attention_mask[start : start + micro_batch_size]  # [n, P+L]
        groups = prompt_groups(ids, mask, completion_len) if share else None
        run = _forward_shared if groups is not None else _forward_plain
        parts = run(model, ids, mask, completion_len, groups)  # [(logits [n, l, V], ids [n, l])]
        pairs = [logprobs_and_entropy(lg, tg, chunk_size, temperature, with_entropy,
                                      entropy_grad)
                 for lg, tg in parts]  # entropy: from the same pass
        logps.append(torch.cat([lp for lp, _ in pairs], dim=1))  # [n, L]
        if with_entropy:
            entropies.append(torch.cat([e for _, e in pairs], dim=1))  # [n, L]
    logp = torch.cat(logps)  # [N, L]
    entropy = torch.cat(entropies) if with_entropy else None  # [N, L]
    return logp, entropy


def _checkpointing_active(model: nn.Module) -> bool:
    """True when activation checkpointing would run (it discards KV caches inside layers)."""
    return any(getattr(m, "gradient_checkpointing", False) and m.training
               for m in model.modules())


def prompt_groups(input_ids: Tensor, attention_mask: Tensor, completion_len: int) -> Tensor | None:
    """Row -> index of its distinct prompt, for consecutive rows with identical prompts.

    Returns ``[n]`` group indices (0, 0, ..., 1, 1, ...) or None when no two consecutive
    rows share a prompt (then sharing would save nothing).
    """
    P = input_ids.shape[1] - completion_len
    ids, mask = input_ids[:, :P], attention_mask[:, :P]  # [n, P]
    same = ((ids[1:] == ids[:-1]) & (mask[1:] == mask[:-1])).all(dim=1)  # [n-1]
    if not bool(same.any()):
        return None
    new_group = torch.cat([same.new_ones(1), ~same])  # [n]
    return new_group.long().cumsum(0) - 1  # [n]


def _forward_plain(model: nn.Module, ids: Tensor, mask: Tensor, completion_len: int,
                   groups: None) -> list[tuple[Tensor, Tensor]]:
    """One pass over prompt + completion; logits of the L positions predicting the completion."""
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                logits_to_keep=completion_len + 1, use_cache=False)
    # Logits at position t predict token t+1: the first kept one predicts the first
    # completion token, the last kept one (after the final token) is dropped.
    logits = out.logits[:, -(completion_len + 1) : -1, :]  # [n, L, V]
    return [(logits, ids[:, -completion_len:])]


def _forward_shared(model: nn.Module, ids: Tensor, mask: Tensor, completion_len: int,
                    groups: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Each distinct prompt once, then the completions on top of its copied KV cache.

    Returns two (logits, targets) parts: the prompt's last position (predicting completion
    token 1) and the completion positions 1..L-1 (predicting tokens 2..L).
    """
    L = completion_len
    P = ids.shape[1] - L
    first = torch.cat([groups.new_ones(1), (groups[1:] != groups[:-1]).long()]).bool()  # [n]
    p_ids, p_mask = ids[first, :P], mask[first, :P]  # [u, P]
    out = model(input_ids=p_ids, attention_mask=p_mask,
                position_ids=position_ids_from_mask(p_mask), logits_to_keep=1, use_cache=True)
    parts = [(out.logits[:, -1:, :][groups], ids[:, P : P + 1])]  # [n, 1, V], [n, 1]
    if L == 1:
        return parts
    cache = out.past_key_values
    if cache is None:  # a model that returned no cache: the plain pass
        return _forward_plain(model, ids, mask, completion_len, None)
    cache.batch_select_indices(groups)  # row r gets its prompt's cache (grads add back up)
    c_mask = mask[:, : P + L - 1]  # [n, P+L-1]
    rest = model(input_ids=ids[:, P : P + L - 1], attention_mask=c_mask,
                 position_ids=position_ids_from_mask(c_mask)[:, P:], past_key_values=cache,
                 use_cache=True)
    parts.append((rest.logits, ids[:, P + 1 :]))  # [n, L-1, V], [n, L-1]
    return parts

"""Sequence packing for `grpo sft` (sft.packing=true): short rows share one sequence of up to
sft.max_seq_len tokens instead of each being padded to the longest row of its micro-batch.

Rows never see each other: in a packed sequence each row keeps the positions it has alone
(position ids restart at 0), and attention is block-diagonal causal (a token attends to the
earlier tokens of its own row only):

    rows a (3 tokens), b (2), padding (1)    segment_ids  = [0 0 0 1 1 -1]
                                             position_ids = [0 1 2 0 1 0]
    attend[q, k] = segment[q] == segment[k] and k <= q

The first token of a row has label -100 (it would be predicted from the previous row's last
token), so each row's loss is exactly its loss alone (tests/sft/test_sft_pack.py). The mask is
what the model's attention takes: a boolean [B, 1, T, T] for sdpa, the same as an additive
float mask for eager; flash_attention_2 reads the packing from position_ids alone (transformers
builds its variable-length call from where the positions restart).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from grpo_cli.sft.chat import IGNORE


def pack(items: Sequence[Any], max_len: int) -> list[list[Any]]:
    """Rows (with .input_ids / .labels) in as few sequences of at most max_len tokens as this
    finds, filled evenly: the fewest that could hold them (total / max_len, rounded up), each
    row, longest first, into the least-filled one; one more sequence whenever a row fits in
    none. Even sequences matter because a micro-batch is padded to its longest."""
    ordered = sorted(items, key=lambda t: -len(t.input_ids))
    if ordered and len(ordered[0].input_ids) > max_len:  # load_sft_data drops such rows
        raise ValueError(f"a row of {len(ordered[0].input_ids)} tokens > max_len={max_len}")
    count = max(1, math.ceil(sum(len(t.input_ids) for t in ordered) / max_len))
    while True:
        bins: list[list[Any]] = [[] for _ in range(count)]
        sizes = [0] * count
        for item in ordered:
            i = min(range(count), key=sizes.__getitem__)
            if sizes[i] + len(item.input_ids) > max_len:
                break  # no sequence has room (this is the least filled)
            bins[i].append(item)
            sizes[i] += len(item.input_ids)
        else:
            return bins
        count += 1


def collate_packed(seqs: Sequence[Sequence[Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids / labels / position_ids / segment_ids, each [B, T], of packed sequences,
    right-padded (the padding is segment -1, label -100)."""
    width = max(sum(len(t.input_ids) for t in seq) for seq in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # [B, T]
    labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)  # [B, T]
    positions = torch.zeros((len(seqs), width), dtype=torch.long)  # [B, T]
    segments = torch.zeros((len(seqs), width), dtype=torch.long)  # [B, T]
    for b, seq in enumerate(seqs):
        at = 0
        for s, item in enumerate(seq):
            n = len(item.input_ids)
            ids[b, at:at + n] = torch.tensor(item.input_ids)
            labels[b, at:at + n] = torch.tensor(item.labels)
            labels[b, at] = IGNORE  # not predicted from the previous row
            positions[b, at:at + n] = torch.arange(n)
            segments[b, at:at + n] = s
            at += n
        positions[b, at:] = torch.arange(width - at)
        segments[b, at:] = -1
    return {"input_ids": ids, "labels": labels, "position_ids": positions,
            "segment_ids": segments}


def block_causal_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """[B, 1, T, T] bool, True where query q may attend to key k (same segment, k <= q)."""
    width = segment_ids.shape[1]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]  # [B, T, T]
    causal = torch.ones(width, width, dtype=torch.bool, device=segment_ids.device).tril()
    return (same & causal)[:, None]  # [B, 1, T, T]


def packed_inputs(model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's keyword arguments for a packed batch, for its attention implementation."""
    attn = getattr(getattr(model, "config", None), "_attn_implementation", None) or "sdpa"
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
    if attn.startswith("flash"):
        return inputs  # packing read from position_ids
    allowed = block_causal_mask(batch["segment_ids"])  # [B, 1, T, T]
    if attn == "eager":  # eager adds the mask to the scores
        dtype = model.get_input_embeddings().weight.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        inputs["attention_mask"] = mask.masked_fill(~allowed, torch.finfo(dtype).min)
    else:
        inputs["attention_mask"] = allowed
    return inputs


"""Sampling completions: `num_samples` per prompt, batched across prompts with left padding.

The engine here is transformers' `generate` with its KV cache. The sampler's logits are
divided by `temperature` and (optionally) masked by top-p / top-k; the trainer's log-probs use
the same temperature and no masking (see logprobs.py), which is the standard GRPO choice.

A `Rollout` holds everything later stages need, as tensors on the policy's device:

    prompt_ids       [N, P]  left-padded prompt tokens (N = prompts x samples, grouped:
                             rows i*S .. i*S+S-1 belong to prompt i)
    prompt_mask      [N, P]
    completion_ids   [N, L]  right-padded; tokens after the first EOS are pad
    completion_mask  [N, L]  1 for completion tokens up to and including the first EOS
    truncated        [N]     True when no EOS came within max_new_tokens
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch


@dataclass
class Rollout:
    prompt_ids: torch.Tensor  # [N, P]
    prompt_mask: torch.Tensor  # [N, P]
    completion_ids: torch.Tensor  # [N, L]
    completion_mask: torch.Tensor  # [N, L]
    truncated: torch.Tensor  # [N] bool
    texts: list[str]

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(dim=1)  # [N]

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)  # [N, P+L]

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)  # [N, P+L]

    def select(self, rows: torch.Tensor | list[int]) -> Rollout:
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.prompt_ids.device)
        return Rollout(self.prompt_ids[idx], self.prompt_mask[idx], self.completion_ids[idx],
                       self.completion_mask[idx], self.truncated[idx],
                       [self.texts[i] for i in idx.tolist()])


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token that ends a completion: the tokenizer's EOS and the generation config's."""
    ids = set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, gen_eos):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return sorted(ids)


def _completion_mask(completion_ids: torch.Tensor, eos_ids: list[int]) -> tuple[torch.Tensor,
                                                                                  torch.Tensor]:
    """Mask up to and including the first EOS; truncated = no EOS at all."""
    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids, device=completion_ids.device))
    has_eos = is_eos.any(dim=1)  # [N]
    L = completion_ids.shape[1]
    first_eos = torch.where(has_eos, is_eos.float().argmax(dim=1), torch.full_like(has_eos, L,
                                                                                   dtype=torch.long))
    positions = torch.arange(L, device=completion_ids.device).unsqueeze(0)  # [1, L]
    mask = (positions <= first_eos.unsqueeze(1)).long()  # [N, L]
    return mask, ~has_eos


@torch.no_grad()
def generate(model: Any, tokenizer: Any, prompts: list[str], *, num_samples: int,
             max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
             min_new_tokens: int = 0, greedy: bool = False, batch_size: Optional[int] = None,
             on_batch: Optional[Callable[[int], None]] = None) -> Rollout:
    """Sample `num_samples` completions for each (chat-rendered) prompt.

    `batch_size` caps the sequences generated at once (prompts are never split across
    batches, so a group is sampled together). `on_batch(n)` is called after each batch with
    the number of sequences done (a progress bar hook).
    """
    device = next(model.parameters()).device
    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id
    per_batch = max(1, (batch_size or len(prompts) * num_samples) // num_samples)
    pieces = []
    was_training = model.training
    model.eval()
    for start in range(0, len(prompts), per_batch):
        enc = tokenizer(prompts[start:start + per_batch], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(device)
        sampling = dict(do_sample=not greedy)
        if not greedy:
            sampling.update(temperature=temperature, top_p=top_p, top_k=top_k)
        out = model.generate(
            **enc, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
            num_return_sequences=num_samples, eos_token_id=eos_ids, pad_token_id=pad_id,
            use_cache=True, **sampling)  # [n*S, P+L]
        P = enc["input_ids"].shape[1]
        pieces.append((enc["input_ids"].repeat_interleave(num_samples, dim=0),
                       enc["attention_mask"].repeat_interleave(num_samples, dim=0), out[:, P:]))
        if on_batch is not None:
            on_batch(out.shape[0])
    if was_training:
        model.train()
    return _assemble(pieces, eos_ids, pad_id, tokenizer)


def _pad_to(t: torch.Tensor, width: int, value: int, left: bool) -> torch.Tensor:
    gap = width - t.shape[1]
    if gap == 0:
        return t
    fill = torch.full((t.shape[0], gap), value, dtype=t.dtype, device=t.device)
    return torch.cat([fill, t] if left else [t, fill], dim=1)


def _assemble(pieces: list, eos_ids: list[int], pad_id: int, tokenizer: Any) -> Rollout:
    P = max(p[0].shape[1] for p in pieces)
    L = max(max(p[2].shape[1] for p in pieces), 1)
    prompt_ids = torch.cat([_pad_to(p[0], P, pad_id, left=True) for p in pieces])  # [N, P]
    prompt_mask = torch.cat([_pad_to(p[1], P, 0, left=True) for p in pieces])  # [N, P]
    completion_ids = torch.cat([_pad_to(p[2], L, pad_id, left=False) for p in pieces])  # [N, L]
    completion_mask, truncated = _completion_mask(completion_ids, eos_ids)
    completion_ids = torch.where(completion_mask.bool(), completion_ids,
                                 torch.full_like(completion_ids, pad_id))  # [N, L]
    texts = tokenizer.batch_decode(
        [ids[: int(n)] for ids, n in zip(completion_ids, completion_mask.sum(1))],
        skip_special_tokens=True)
    return Rollout(prompt_ids, prompt_mask, completion_ids, completion_mask, truncated, texts)


def concat_rollouts(parts: list[Rollout], pad_id: int) -> Rollout:
    """Stack rollouts of different prompt/completion widths into one (re-padded)."""
    if len(parts) == 1:
        return parts[0]
    P = max(r.prompt_ids.shape[1] for r in parts)
    L = max(r.completion_ids.shape[1] for r in parts)
    return Rollout(
        torch.cat([_pad_to(r.prompt_ids, P, pad_id, left=True) for r in parts]),  # [N, P]
        torch.cat([_pad_to(r.prompt_mask, P, 0, left=True) for r in parts]),  # [N, P]
        torch.cat([_pad_to(r.completion_ids, L, pad_id, left=False) for r in parts]),  # [N, L]
        torch.cat([_pad_to(r.completion_mask, L, 0, left=False) for r in parts]),  # [N, L]
        torch.cat([r.truncated for r in parts]),  # [N]
        [t for r in parts for t in r.texts])

"""Sampling completions: `num_samples` per prompt, batched across prompts with left padding.

The engine is a small decode loop over the model with transformers' KV cache (`sample_tokens`),
not `model.generate`, because two things make it much cheaper for GRPO's "G samples of the
same prompt" pattern:

- the prompt is prefilled once per prompt and its KV cache copied G times
  (`generate(num_return_sequences=G)` prefills every copy);
- rows that have emitted EOS leave the batch (their cache rows are dropped), and the loop
  has none of generate's per-token bookkeeping;
- the KV cache is allocated once for prompt + max_new_tokens and written in place
  (`PreallocatedLayer`), instead of being re-concatenated (copied whole) at every token.

It samples from exactly the distribution `generate` samples from: logits in float32, EOS
masked while fewer than `min_new_tokens` tokens exist, then temperature, top-k and top-p in
transformers' order and with its tie rules (`process_logits`), then one multinomial draw;
greedy is the argmax with the same EOS rule. The trainer's log-probs use the same
temperature and no masking (see logprobs.py), which is the standard GRPO choice.

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
from transformers.cache_utils import DynamicCache, DynamicLayer

from grpo_cli.tokenizer import stop_token_ids


@dataclass
class Rollout:
    prompt_ids: torch.Tensor  # [N, P]
    prompt_mask: torch.Tensor  # [N, P]
    completion_ids: torch.Tensor  # [N, L]
    completion_mask: torch.Tensor  # [N, L]
    truncated: torch.Tensor  # [N] bool
    texts: list[str]
    # [N, L] float32 log-probs of the tokens under the weights that sampled them, kept when
    # those were not the trainer's own (LoRA merged for decoding); None otherwise.
    sampler_logp: Optional[torch.Tensor] = None

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
                       [self.texts[i] for i in idx.tolist()],
                       self.sampler_logp[idx] if self.sampler_logp is not None else None)


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token that ends a completion: the tokenizer's EOS and the generation config's."""
    return sorted(stop_token_ids(tokenizer, model))


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


def mask_top_k(scores: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the `top_k` largest logits per row (ties with the k-th kept), others -inf."""
    k = min(max(top_k, 1), scores.shape[-1])
    kth = torch.topk(scores, k, dim=-1).values[..., -1:]  # [N, 1]
    return scores.masked_fill(scores < kth, float("-inf"))  # [N, V]


def mask_top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus: drop the least likely tokens whose total mass is <= 1 - top_p (keep >= 1)."""
    sorted_logits, sorted_idx = torch.sort(scores, descending=False)  # [N, V]
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # [N, V]
    drop_sorted = cum <= (1 - top_p)  # [N, V]
    drop_sorted[..., -1:] = False
    drop = drop_sorted.scatter(1, sorted_idx, drop_sorted)  # [N, V]
    return scores.masked_fill(drop, float("-inf"))  # [N, V]


def process_logits(scores: torch.Tensor, *, temperature: float, top_k: int,
                   top_p: float) -> torch.Tensor:
    """Temperature, then top-k, then top-p: transformers' sampling warpers, in its order."""
    if temperature != 1.0:
        scores = scores / temperature  # [N, V]
    if top_k:
        scores = mask_top_k(scores, top_k)
    if top_p < 1.0:
        scores = mask_top_p(scores, top_p)
    return scores  # [N, V]


def draw_inverse_cdf(scores: torch.Tensor) -> torch.Tensor:
    """One token per row from softmax(scores), by inverting its float64 cumulative sum.

    The same distribution as `torch.multinomial(scores.softmax(-1), 1)` (the weights are the
    float32 softmax numerators; tokens at -inf get none), drawn with one uniform number per
    row: ~5x cheaper than multinomial on CPU, which draws an exponential number per vocabulary
    entry. float64 keeps the cumulative sum exact to ~1e-16 of the total, so even tokens of
    probability 1e-12 keep their share.
    """
    weights = (scores - scores.max(dim=-1, keepdim=True).values).exp()  # [N, V] float32
    cdf = weights.double().cumsum_(dim=-1)  # [N, V]
    total = cdf[:, -1:]  # [N, 1]
    u = torch.rand(total.shape, dtype=cdf.dtype, device=cdf.device) * total  # [N, 1]
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # keep u < total
    return torch.searchsorted(cdf, u, right=True).squeeze(1)  # [N]


def draw_multinomial(scores: torch.Tensor) -> torch.Tensor:
    """transformers' draw: `torch.multinomial` on the float32 softmax (same RNG stream)."""
    return torch.multinomial(scores.softmax(dim=-1), num_samples=1).squeeze(1)  # [N]


Draw = Callable[[torch.Tensor], torch.Tensor]


def _choose(scores: torch.Tensor, greedy: bool, temperature: float, top_k: int,
            top_p: float, draw: Draw) -> torch.Tensor:
    if greedy:
        return scores.argmax(dim=-1)  # [N]
    return draw(process_logits(scores, temperature=temperature, top_k=top_k, top_p=top_p))


def _drop_rows(cache: Any, keep: torch.Tensor) -> bool:
    """Keep only rows `keep` of the KV cache in place; False when the cache cannot."""
    try:
        cache.batch_select_indices(keep)
    except (AttributeError, NotImplementedError):
        return False
    return True


class PreallocatedLayer(DynamicLayer):
    """A DynamicLayer whose keys/values live in buffers sized for the whole generation.

    transformers' DynamicLayer concatenates every new token onto the cache, copying all of it
    at each step; here the token is written in place and `keys`/`values` are views of the
    filled part, so everything else (masks, seq length, attention) sees a DynamicLayer.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def _view(self, length: int) -> None:
        self.keys = self._k[:, :, :length]  # [B, H, length, D]
        self.values = self._v[:, :, :length]  # [B, H, length, D]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.dtype, self.device = key_states.dtype, key_states.device
            B, H = key_states.shape[:2]
            self._k = key_states.new_empty(B, H, self.capacity, key_states.shape[-1])
            self._v = value_states.new_empty(B, H, self.capacity, value_states.shape[-1])
            self.is_initialized, length = True, 0
        else:
            length = self.keys.shape[-2]
        new = key_states.shape[-2]
        self._k[:, :, length:length + new] = key_states
        self._v[:, :, length:length + new] = value_states
        self._view(length + new)
        return self.keys, self.values

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.get_seq_length() > 0:
            length = self.keys.shape[-2]
            self._k = self._k.repeat_interleave(repeats, dim=0)
            self._v = self._v.repeat_interleave(repeats, dim=0)
            self._view(length)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.get_seq_length() > 0:
            length = self.keys.shape[-2]
            self._k, self._v = self._k[indices], self._v[indices]
            self._view(length)


def new_cache(model: Any, capacity: int) -> DynamicCache:
    """A DynamicCache for `model`, with preallocated layers where its layers are plain ones."""
    cache = DynamicCache(config=model.config)
    if cache.layers and all(type(layer) is DynamicLayer for layer in cache.layers):
        cache.layers = [PreallocatedLayer(capacity) for _ in cache.layers]
    return cache


@torch.no_grad()
def sample_tokens(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                  num_samples: int, max_new_tokens: int, eos_ids: list[int], pad_id: int,
                  min_new_tokens: int = 0, temperature: float = 1.0, top_p: float = 1.0,
                  top_k: int = 0, greedy: bool = False, draw: Draw = draw_inverse_cdf,
                  with_logprobs: bool = False
                  ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """`num_samples` continuations of each left-padded prompt row: `[n * S, T]` token ids.

    Row i*S + s is sample s of prompt i; after a row's EOS come pad tokens; T <= max_new_tokens
    (the loop stops when every row has ended). The prompt is prefilled once and its cache
    repeated S times; finished rows are dropped from the cache.

    `with_logprobs=True` also returns `[n * S, T]` float32 log-probs of the drawn tokens under
    the sampling model at `temperature` with no top-k/top-p/EOS masking: what the trainer's
    log-prob pass computes, so the two can be compared (0 after a row's end).
    """
    from grpo_cli.logprobs import position_ids_from_mask

    n, P = input_ids.shape
    S = num_samples
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask),
                past_key_values=new_cache(model, P + max_new_tokens), use_cache=True,
                logits_to_keep=1)
    cache = out.past_key_values
    logits = out.logits[:, -1, :].float().repeat_interleave(S, dim=0)  # [N, V]
    if S > 1:
        cache.batch_repeat_interleave(S)
    N = n * S
    mask = torch.cat([attention_mask.repeat_interleave(S, dim=0),
                      attention_mask.new_ones(N, max_new_tokens)], dim=1)  # [N, P+T]
    next_pos = attention_mask.sum(dim=1, keepdim=True).repeat_interleave(S, dim=0)  # [N, 1]
    eos = torch.tensor(eos_ids, dtype=torch.long, device=input_ids.device)
    tokens = torch.full((N, max_new_tokens), pad_id, dtype=input_ids.dtype,
                        device=input_ids.device)  # [N, T]
    rows = torch.arange(N, device=input_ids.device)  # [A] rows still generating
    finished = torch.zeros(N, dtype=torch.bool, device=input_ids.device)  # [A]
    logps = torch.zeros(N, max_new_tokens, device=input_ids.device) if with_logprobs else None
    can_drop = True
    for t in range(max_new_tokens):
        if logps is not None:
            raw = logits / temperature if temperature != 1.0 else logits  # [A, V]
            raw_logz = torch.logsumexp(raw, dim=-1)  # [A]
        if t < min_new_tokens and eos.numel():
            logits[:, eos] = float("-inf")
        nxt = _choose(logits, greedy, temperature, top_k, top_p, draw)  # [A]
        if logps is not None:
            picked = raw.gather(1, nxt.unsqueeze(1)).squeeze(1) - raw_logz  # [A]
            logps[rows, t] = torch.where(finished, torch.zeros_like(picked), picked)
        nxt = torch.where(finished, torch.full_like(nxt, pad_id), nxt)  # pad after EOS
        tokens[rows, t] = nxt
        finished = finished | torch.isin(nxt, eos)  # [A]
        if t == max_new_tokens - 1 or bool(finished.all()):
            if logps is not None:
                return tokens[:, :t + 1], logps[:, :t + 1]
            return tokens[:, :t + 1]
        if can_drop and bool(finished.any()):
            keep = (~finished).nonzero().squeeze(1)  # [A']
            can_drop = _drop_rows(cache, keep)
            if can_drop:
                rows, nxt, mask, next_pos = rows[keep], nxt[keep], mask[keep], next_pos[keep]
                finished = finished[keep]
        out = model(input_ids=nxt.unsqueeze(1), attention_mask=mask[:, :P + t + 1],
                    position_ids=next_pos, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        logits = out.logits[:, -1, :].float()  # [A, V]
        next_pos = next_pos + 1
    return (tokens, logps) if logps is not None else tokens


@torch.no_grad()
def generate(model: Any, tokenizer: Any, prompts: list[str], *, num_samples: int,
             max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
             min_new_tokens: int = 0, greedy: bool = False, batch_size: Optional[int] = None,
             on_batch: Optional[Callable[[int], None]] = None,
             merge_adapters: str = "off") -> Rollout:
    """Sample `num_samples` completions for each (chat-rendered) prompt.

    `batch_size` caps the sequences generated at once (prompts are never split across
    batches, so a group is sampled together). `on_batch(n)` is called after each batch with
    the number of sequences done (a progress bar hook). `merge_adapters` (off / on / auto)
    decodes with LoRA merged into dense weights (see merge.py); sampled rollouts decoded so
    keep their sampler log-probs (`Rollout.sampler_logp`) for the trainer's correction.
    """
    from grpo_cli.merge import merged_for_decoding

    device = next(model.parameters()).device
    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id
    per_batch = max(1, (batch_size or len(prompts) * num_samples) // num_samples)
    pieces = []
    was_training = model.training
    model.eval()
    try:
        with merged_for_decoding(model, merge_adapters) as merged:
            keep_logp = merged and not greedy
            for start in range(0, len(prompts), per_batch):
                enc = tokenizer(prompts[start:start + per_batch], return_tensors="pt",
                                padding=True, add_special_tokens=False).to(device)
                out = sample_tokens(
                    model, enc["input_ids"], enc["attention_mask"], num_samples=num_samples,
                    max_new_tokens=max_new_tokens, eos_ids=eos_ids, pad_id=pad_id,
                    min_new_tokens=min_new_tokens, temperature=temperature, top_p=top_p,
                    top_k=top_k, greedy=greedy, with_logprobs=keep_logp)
                completion, logp = out if keep_logp else (out, None)  # [n*S, T] each
                pieces.append((enc["input_ids"].repeat_interleave(num_samples, dim=0),
                               enc["attention_mask"].repeat_interleave(num_samples, dim=0),
                               completion, logp))
                if on_batch is not None:
                    on_batch(completion.shape[0])
    finally:
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
    logp = None
    if pieces[0][3] is not None:
        logp = torch.cat([_pad_to(p[3], L, 0, left=False) for p in pieces])  # [N, L]
        logp = logp * completion_mask  # [N, L]
    return Rollout(prompt_ids, prompt_mask, completion_ids, completion_mask, truncated, texts,
                   logp)


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
        [t for r in parts for t in r.texts],
        _concat_sampler_logp(parts, L))


def _concat_sampler_logp(parts: list[Rollout], L: int) -> Optional[torch.Tensor]:
    """Per-row sampler log-probs of stacked rollouts: NaN rows for a part drawn by the
    trainer's own weights (nothing to correct there: the loss uses the trainer's own), None
    when no part kept any."""
    if all(r.sampler_logp is None for r in parts):
        return None
    rows = [_pad_to(r.sampler_logp, L, 0, left=False) if r.sampler_logp is not None
            else torch.full(r.completion_ids.shape[:1] + (L,), torch.nan,
                            device=r.completion_ids.device) for r in parts]
    return torch.cat(rows)  # [N, L]

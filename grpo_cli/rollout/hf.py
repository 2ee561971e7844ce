"""Our decode loop (the `hf` engine): `SamplingSettings.num_samples` continuations per prompt.

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
temperature and no masking (see algo/logprobs.py), which is the standard GRPO choice.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from grpo_cli.rollout.settings import SamplingSettings


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
    row: cheaper than multinomial on CPU (README, "Speed against TRL"), which draws an
    exponential number per vocabulary entry. float64 keeps the cumulative sum exact to ~1e-16
    of the total, so even tokens of probability 1e-12 keep their share.
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


def _choose(scores: torch.Tensor, sampling: SamplingSettings, draw: Draw) -> torch.Tensor:
    if sampling.greedy:
        return scores.argmax(dim=-1)  # [N]
    return draw(process_logits(scores, temperature=sampling.temperature, top_k=sampling.top_k,
                               top_p=sampling.top_p))


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
def sample_tokens(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  sampling: SamplingSettings, *, eos_ids: list[int], pad_id: int,
                  draw: Draw = draw_inverse_cdf, with_logprobs: bool = False
                  ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """`S = sampling.num_samples` continuations of each left-padded prompt row: `[n * S, T]`
    token ids.

    Row i*S + s is sample s of prompt i; after a row's EOS come pad tokens; T <= max_new_tokens
    (the loop stops when every row has ended). The prompt is prefilled once and its cache
    repeated S times; finished rows are dropped from the cache.

    `draw` picks one token per row from the warped logits (`draw_multinomial` follows
    transformers' RNG stream). `with_logprobs=True` also returns `[n * S, T]` float32
    log-probs of the drawn tokens under the sampling model at `sampling.temperature` with no
    top-k/top-p/EOS masking: what the trainer's log-prob pass computes, so the two can be
    compared (0 after a row's end).
    """
    from grpo_cli.algo.logprobs import position_ids_from_mask

    n, P = input_ids.shape
    S, max_new_tokens, temperature = (sampling.num_samples, sampling.max_new_tokens,
                                      sampling.temperature)
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
        if t < sampling.min_new_tokens and eos.numel():
            logits[:, eos] = float("-inf")
        nxt = _choose(logits, sampling, draw)  # [A]
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

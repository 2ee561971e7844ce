"""The rollout contract: prompts and sampling settings in, a `Rollout` out.

    generate(model, tokenizer, prompts, sampling, *, batch_size, on_batch, merge_adapters)

`sampling` is a `SamplingSettings`: *what* to sample, in terms every engine has (completions
per prompt, length limits, temperature, top-p, top-k, greedy); a vLLM `SamplingParams` says
the same with other names (n, max_tokens, min_tokens; greedy is temperature 0). The keyword
arguments are *how* this engine runs it: how many sequences at once, a progress hook, and
whether LoRA is merged for decoding. Callers build the settings from their own config
(trainer/settings.py from `rollout` + `algo.num_generations`, evaluation/runner.py from
`eval`), so rollout/ never imports a config schema. It lives in settings.py, which imports
neither torch nor transformers, so a caller can describe a generation without loading them.

`generate` samples `num_samples` completions per prompt, batched across prompts with left
padding, with our decode loop (`hf.py`). The trainer and the evaluator hold an engine object
(rollout.engine): `HfEngine` here wraps `generate` with the policy, and `vllm.VllmEngine`
samples with vLLM. Both answer `engine.generate(prompts, sampling, *, batch_size, on_batch,
seed) -> Rollout` with the same settings and the same `Rollout`: rewards, advantages and the
loss never know which engine ran. Both build it with `rollout_from_completions` (sampled
token ids in; the masks, truncation and texts out), so the EOS and padding rules are one.

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

from grpo_cli.policy.tokenizer import stop_token_ids
from grpo_cli.rollout.hf import sample_tokens
from grpo_cli.rollout.settings import SamplingSettings

__all__ = ["HfEngine", "Rollout", "SamplingSettings", "concat_rollouts", "eos_token_ids",
           "generate", "prompts_per_batch", "rollout_from_completions"]


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

    def select(self, rows: torch.Tensor | list[int]) -> Rollout:
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.prompt_ids.device)
        return Rollout(self.prompt_ids[idx], self.prompt_mask[idx], self.completion_ids[idx],
                       self.completion_mask[idx], self.truncated[idx],
                       [self.texts[i] for i in idx.tolist()],
                       self.sampler_logp[idx] if self.sampler_logp is not None else None)


def prompts_per_batch(batch_size: Optional[int], num_prompts: int, num_samples: int) -> int:
    """How many prompts one generation batch takes: `batch_size` sequences (None = all of
    them) in whole groups of `num_samples`, at least one group."""
    return max(1, (batch_size or num_prompts * num_samples) // num_samples)


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


@torch.no_grad()
def generate(model: Any, tokenizer: Any, prompts: list[str], sampling: SamplingSettings, *,
             batch_size: Optional[int] = None, on_batch: Optional[Callable[[int], None]] = None,
             merge_adapters: str = "off") -> Rollout:
    """Sample `sampling.num_samples` completions for each (chat-rendered) prompt.

    `batch_size` caps the sequences generated at once (prompts are never split across
    batches, so a group is sampled together). `on_batch(n)` is called after each batch with
    the number of sequences done (a progress bar hook). `merge_adapters` (off / on / auto)
    decodes with LoRA merged into dense weights (see policy/merge.py); sampled rollouts decoded so
    keep their sampler log-probs (`Rollout.sampler_logp`) for the trainer's correction.
    """
    from grpo_cli.policy.merge import merged_for_decoding

    device = next(model.parameters()).device
    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id
    S = sampling.num_samples
    per_batch = prompts_per_batch(batch_size, len(prompts), S)
    pieces = []
    was_training = model.training
    model.eval()
    try:
        with merged_for_decoding(model, merge_adapters) as merged:
            keep_logp = merged and not sampling.greedy
            for start in range(0, len(prompts), per_batch):
                enc = tokenizer(prompts[start:start + per_batch], return_tensors="pt",
                                padding=True, add_special_tokens=False).to(device)
                out = sample_tokens(model, enc["input_ids"], enc["attention_mask"], sampling,
                                    eos_ids=eos_ids, pad_id=pad_id, with_logprobs=keep_logp)
                completion, logp = out if keep_logp else (out, None)  # [n*S, T] each
                pieces.append(rollout_from_completions(
                    enc["input_ids"].repeat_interleave(S, dim=0),
                    enc["attention_mask"].repeat_interleave(S, dim=0),
                    completion, logp, eos_ids, pad_id, tokenizer))
                if on_batch is not None:
                    on_batch(completion.shape[0])
    finally:
        if was_training:
            model.train()
    return concat_rollouts(pieces, pad_id)


@dataclass
class HfEngine:
    """The `hf` engine as an object: `generate` with the policy's model and tokenizer."""

    policy: Any  # policy.model.Policy
    merge_adapters: str = "off"  # rollout.merge_adapters

    def generate(self, prompts: list[str], sampling: SamplingSettings, *,
                 batch_size: Optional[int] = None,
                 on_batch: Optional[Callable[[int], None]] = None,
                 seed: Optional[int] = None) -> Rollout:
        """`seed` is unused: this engine draws from torch's global RNG (seeded per run)."""
        return generate(self.policy.model, self.policy.tokenizer, prompts, sampling,
                        batch_size=batch_size, on_batch=on_batch,
                        merge_adapters=self.merge_adapters)

    def close(self) -> None:
        pass


def rollout_from_completions(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                             completion_ids: torch.Tensor, logp: Optional[torch.Tensor],
                             eos_ids: list[int], pad_id: int, tokenizer: Any) -> Rollout:
    """One generation batch as a Rollout, from any engine's sampled tokens: the completion
    mask up to and including the first EOS, pad after it, the decoded texts, and the sampler
    log-probs (when kept) zeroed past the mask. Prompt rows are already repeated per sample."""
    completion_mask, truncated = _completion_mask(completion_ids, eos_ids)  # [n, T], [n]
    completion_ids = torch.where(completion_mask.bool(), completion_ids,
                                 torch.full_like(completion_ids, pad_id))  # [n, T]
    texts = tokenizer.batch_decode(
        [ids[: int(n)] for ids, n in zip(completion_ids, completion_mask.sum(1))],
        skip_special_tokens=True)
    if logp is not None:
        logp = logp * completion_mask  # [n, T]
    return Rollout(prompt_ids, prompt_mask, completion_ids, completion_mask, truncated, texts,
                   logp)


def _pad_to(t: torch.Tensor, width: int, value: int, left: bool) -> torch.Tensor:
    gap = width - t.shape[1]
    if gap == 0:
        return t
    fill = torch.full((t.shape[0], gap), value, dtype=t.dtype, device=t.device)
    return torch.cat([fill, t] if left else [t, fill], dim=1)


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

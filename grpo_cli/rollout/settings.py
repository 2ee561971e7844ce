"""`SamplingSettings`: what a rollout engine samples (the contract is in engine.py).

No torch or transformers here: a report can record the settings without loading them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingSettings:
    """What to sample, for any engine. The defaults are the neutral ones (no warping)."""

    num_samples: int  # completions per prompt (G when training)
    max_new_tokens: int  # a completion without EOS by then is truncated
    temperature: float = 1.0
    top_p: float = 1.0  # nucleus: 1 = off
    top_k: int = 0  # 0 = off
    min_new_tokens: int = 0  # EOS cannot end a completion before this many tokens
    greedy: bool = False  # argmax at every step (the draw ignores temperature, top_p, top_k)

"""The order in which training prompts are taken: deterministic, resumable.

Epoch e visits every prompt once, in a permutation drawn from (seed, e). The whole state is
one integer, the number of prompts taken so far, which checkpoints store.
"""

from __future__ import annotations

import random


class PromptSampler:
    def __init__(self, num_prompts: int, seed: int, position: int = 0) -> None:
        self.num_prompts = num_prompts
        self.seed = seed
        self.position = position
        self._epoch = -1
        self._order: list[int] = []

    def _order_for(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            order = list(range(self.num_prompts))
            random.Random(f"{self.seed}-{epoch}").shuffle(order)
            self._epoch, self._order = epoch, order
        return self._order

    def take(self, n: int) -> list[int]:
        """The next n prompt indices."""
        out = []
        for _ in range(n):
            epoch, offset = divmod(self.position, self.num_prompts)
            out.append(self._order_for(epoch)[offset])
            self.position += 1
        return out

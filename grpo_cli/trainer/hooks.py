"""Points in a run where a caller can step in. The library calls them; by default they do
nothing.

    before_rollout(step)                         before each rollout attempt (a retry after
                                                 an out-of-memory error calls it again)
    on_loss(loss, step) -> loss                  each micro-batch's loss, before its backward
    before_backward(step, micro, num_micro)      before the backward of micro-batch `micro`
                                                 (0-based) of `num_micro` in one optimizer step
    in_checkpoint(step)                          inside a checkpoint save: every file written,
                                                 the folder not yet renamed into place
    after_step(step, params)                     a step's update done: `params` are the
                                                 trainable parameters as they now are

`train.run(..., hooks=...)` and `cli.main(..., hooks=...)` take an implementation; the
reliability tests pass one that injects faults (tests/support/fault_hooks.py), so that they
exercise exactly the code a user runs.
"""

from __future__ import annotations

import torch


class Hooks:
    """The no-op hooks: subclass and override the points you need."""

    def before_rollout(self, step: int) -> None:
        pass

    def on_loss(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        return loss

    def before_backward(self, step: int, micro: int, num_micro: int) -> None:
        pass

    def in_checkpoint(self, step: int) -> None:
        pass

    def after_step(self, step: int, params: list[torch.nn.Parameter]) -> None:
        pass


NO_HOOKS = Hooks()

"""Out of memory is not fatal: free what the failed attempt held, halve a batch size for the
rest of the run, and do the same work again.

    retry_on_oom(parts, state, what, work, shrink)   work(); after an OOM: free, shrink, again
    halve_micro_batch(parts, state, what)            the log-prob / backward passes
    halve_rollout_batch(parts, state, what)          the rollout (groups of G stay whole)

An OOM is a CUDA OutOfMemoryError, or a RuntimeError saying 'out of memory' (cuBLAS, older
torch). The half-accumulated gradients are dropped before a retry. At one group per rollout
batch or one sequence per micro-batch there is nothing left to halve: a UserError points to
`grpo plan`. The halved sizes live in the RunState, so a later step starts from them.
"""

from __future__ import annotations

import gc
from typing import Callable, TypeVar

import torch

from grpo_cli.errors import UserError
from grpo_cli.trainer.parts import RunParts, RunState

T = TypeVar("T")
PLAN_ADVICE = ("this config does not fit in memory; run `grpo plan` with the same arguments "
               "for an estimate, then lower rollout.max_new_tokens or algo.num_generations, or "
               "set model.gradient_checkpointing=true / model.quantization=nf4")


def is_oom(exc: BaseException) -> bool:
    """torch's OutOfMemoryError, or a RuntimeError saying 'out of memory' (cuBLAS, older torch)."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def free_memory(optimizer: torch.optim.Optimizer | None = None) -> None:
    """Drop gradients and cached blocks after an out-of-memory error, before a retry."""
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def retry_on_oom(parts: RunParts, state: RunState, what: str, work: Callable[[], T],
                 shrink: Callable[[RunParts, RunState, str], None]) -> T:
    """work(); after an out-of-memory error: free memory, shrink(parts, state, what), again."""
    while True:
        try:
            return work()
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            if not is_oom(exc):
                raise
        # Outside the except block, so the failed frames (and their tensors) are released.
        free_memory(parts.optimizer)
        shrink(parts, state, what)
        state.oom_retries += 1


def halve_micro_batch(parts: RunParts, state: RunState, what: str) -> None:
    old = state.micro_batch_size
    if old <= 1:
        raise UserError(f"out of memory in the {what} at step {state.step} even at "
                        f"trainer.micro_batch_size=1: {PLAN_ADVICE}")
    state.micro_batch_size = old // 2
    parts.tracker.warn(f"step {state.step}: out of memory in the {what} at micro-batch {old}; "
                       f"retrying with trainer.micro_batch_size={old // 2} for the rest of "
                       "the run")


def halve_rollout_batch(parts: RunParts, state: RunState, what: str) -> None:
    G = parts.cfg.algo.num_generations
    # None = the whole step's batch at once.
    groups = max(1, (state.rollout_batch_size or parts.cfg.trainer.prompts_per_step * G) // G)
    if groups <= 1:
        raise UserError(f"out of memory in the {what} at step {state.step} even at one group "
                        f"of algo.num_generations={G} per batch: {PLAN_ADVICE}")
    state.rollout_batch_size = (groups // 2) * G
    parts.tracker.warn(f"step {state.step}: out of memory in the {what} at {groups * G} "
                       f"sequences; retrying with rollout.batch_size={state.rollout_batch_size}"
                       " for the rest of the run")

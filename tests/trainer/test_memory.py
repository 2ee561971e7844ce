"""Out-of-memory recognition and the halve-and-retry logic (trainer/memory.py), in-process."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from grpo_cli.errors import UserError
from grpo_cli.trainer.memory import (
    halve_micro_batch,
    halve_rollout_batch,
    is_oom,
    retry_on_oom,
)
from grpo_cli.trainer.parts import RunState


def test_oom_is_recognised():
    assert is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_oom(RuntimeError("CUDA error: out of memory"))
    assert not is_oom(RuntimeError("shape mismatch"))
    assert not is_oom(ValueError("out of memory"))


def _run(mbs=4, rollout=None):
    """(parts, state) with what the retry code reads: G=4, 4 prompts per step."""
    param = torch.nn.Parameter(torch.ones(2))
    param.grad = torch.ones(2)
    warnings = []
    cfg = SimpleNamespace(algo=SimpleNamespace(num_generations=4),
                          trainer=SimpleNamespace(prompts_per_step=4))
    parts = SimpleNamespace(cfg=cfg, optimizer=torch.optim.AdamW([param]),
                            tracker=SimpleNamespace(warn=warnings.append),
                            warnings=warnings, param=param)
    return parts, RunState(micro_batch_size=mbs, rollout_batch_size=rollout, step=7)


def test_retry_halves_the_micro_batch_and_drops_partial_gradients():
    parts, state = _run(mbs=4)
    seen = []

    def work():
        seen.append(state.micro_batch_size)
        assert parts.param.grad is None or len(seen) == 1  # grads dropped before a retry
        if state.micro_batch_size > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return "done"

    assert retry_on_oom(parts, state, "backward pass", work, halve_micro_batch) == "done"
    assert seen == [4, 2, 1] and state.oom_retries == 2
    assert "retrying with trainer.micro_batch_size=2" in parts.warnings[0]


def test_retry_gives_up_at_micro_batch_one_with_plan_advice():
    parts, state = _run(mbs=1)

    def work():
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(UserError, match="micro_batch_size=1.*grpo plan"):
        retry_on_oom(parts, state, "backward pass", work, halve_micro_batch)


def test_retry_halves_the_rollout_batch_down_to_one_group():
    parts, state = _run(rollout=None)  # the whole step: 4 prompts x G=4 = 16 sequences
    sizes = []

    def work():
        sizes.append(state.rollout_batch_size)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(UserError, match="one group of algo.num_generations=4"):
        retry_on_oom(parts, state, "rollout", work, halve_rollout_batch)
    assert sizes == [None, 8, 4]


def test_other_errors_are_not_retried():
    parts, state = _run()

    def work():
        raise RuntimeError("index out of range")

    with pytest.raises(RuntimeError, match="index out of range"):
        retry_on_oom(parts, state, "backward pass", work, halve_micro_batch)
    assert state.oom_retries == 0

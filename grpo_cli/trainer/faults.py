"""Fault injection for the reliability tests, and the out-of-memory helpers the loop uses.

Set `GRPO_FAULT` to one or more comma-separated entries `kind:step[:times]`:

    kill_in_checkpoint:N    SIGKILL this process inside the save of a checkpoint at step N,
                            after the policy files are written and before the rename
    enospc_checkpoint:N[:T] OSError(ENOSPC) inside the next T checkpoint saves at step N
    nan_loss:N              every micro-batch loss from step N on is NaN
    oom_rollout:N[:T]       torch.cuda.OutOfMemoryError in the first T rollout attempts of step N
    oom_backward:N[:T]      the same in the backward pass of step N (after one micro-batch's
                            gradients were accumulated when there are several)

T defaults to 1; T=0 means every time. With the variable unset every hook is a no-op that
costs one dict lookup, so the hooks stay in the real code path: the tests exercise exactly
the code a user runs.
"""

from __future__ import annotations

import errno
import gc
import os
import signal
from dataclasses import dataclass

import torch

ENV = "GRPO_FAULT"
HOOK_KINDS = ("kill_in_checkpoint", "enospc_checkpoint", "nan_loss", "oom_rollout",
              "oom_backward")


@dataclass
class Fault:
    kind: str
    step: int
    times: int  # 0 = unlimited
    fired: int = 0


_state: dict[str, list[Fault]] = {}  # GRPO_FAULT text -> its parsed faults (with counts)


def _parse(text: str) -> list[Fault]:
    faults = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        parts = entry.split(":")
        if len(parts) not in (2, 3) or parts[0] not in HOOK_KINDS:
            raise ValueError(f"{ENV}={text!r}: bad entry {entry!r}; write kind:step[:times] "
                             f"with kind one of {', '.join(HOOK_KINDS)}")
        default = 0 if parts[0] == "nan_loss" else 1  # nan_loss: every step from N on
        faults.append(Fault(parts[0], int(parts[1]),
                            int(parts[2]) if len(parts) == 3 else default))
    return faults


def _active() -> list[Fault]:
    text = os.environ.get(ENV, "")
    if text not in _state:
        _state.clear()
        _state[text] = _parse(text)
    return _state[text]


def reset() -> None:
    """Forget how often each fault fired (for tests that set GRPO_FAULT in-process)."""
    _state.clear()


def fires(kind: str, step: int) -> bool:
    """True when a configured fault of `kind` is due at `step` (and counts it as fired)."""
    for fault in _active():
        if fault.kind != kind:
            continue
        due = step >= fault.step if kind == "nan_loss" else step == fault.step
        if due and (fault.times == 0 or fault.fired < fault.times):
            fault.fired += 1
            return True
    return False


def in_checkpoint(step: int) -> None:
    """Hook inside save_checkpoint: between the written files and the rename."""
    if fires("kill_in_checkpoint", step):
        os.kill(os.getpid(), signal.SIGKILL)
    if fires("enospc_checkpoint", step):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def poison_loss(loss: torch.Tensor, step: int) -> torch.Tensor:
    """Hook on a micro-batch loss: NaN from the configured step on."""
    return loss * float("nan") if fires("nan_loss", step) else loss


def maybe_oom(where: str, step: int) -> None:
    """Hook before a rollout / backward pass: raise the error a full GPU raises."""
    if fires(f"oom_{where}", step):
        raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected by {ENV}, {where})")


# ----------------------------------------------------------------------------- out of memory

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

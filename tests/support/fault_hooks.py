"""Fault injection for the reliability tests: trainer hooks (grpo_cli/trainer/hooks.py) that
raise the errors a full GPU, a full disk or a NaN loss would.

A spec is one or more comma-separated entries `kind:step[:times][@rank]` (`@rank`: only in
that torchrun rank, RANK in the environment):

    kill_in_checkpoint:N    SIGKILL this process inside the save of a checkpoint at step N,
                            after the policy files are written and before the rename
    enospc_checkpoint:N[:T] OSError(ENOSPC) inside the next T checkpoint saves at step N
    nan_loss:N              every micro-batch loss from step N on is NaN
    oom_rollout:N[:T]       torch.cuda.OutOfMemoryError in the first T rollout attempts of step N
    oom_backward:N[:T]      the same in the backward pass of step N (the last micro-batch's, so
                            that earlier micro-batches left gradients when there are several)
    kill:N                  SIGKILL this process before the rollout of step N (a crashed rank)

GRPO_FAULT_ONCE=PATH makes each fault fire once per run, not once per process: a fired
fault is written to PATH and a later process (a restart by torchrun --max-restarts) skips it.

GRPO_WEIGHT_LOG=PREFIX (any spec, or none) appends, after every step, the step and a SHA-256
of the trainable parameters to PREFIX.rank<RANK>.jsonl: the data-parallel tests compare
ranks with it.

T defaults to 1; T=0 means every time. `fault_cli.py` runs the real CLI with the hooks of the
GRPO_FAULT environment variable's spec, for the tests that train in a subprocess.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
from dataclasses import dataclass

import torch

from grpo_cli.trainer.hooks import Hooks

ENV = "GRPO_FAULT"
KINDS = ("kill_in_checkpoint", "enospc_checkpoint", "nan_loss", "oom_rollout", "oom_backward",
         "kill")
WEIGHT_LOG = "GRPO_WEIGHT_LOG"


@dataclass
class Fault:
    kind: str
    step: int
    times: int  # 0 = unlimited
    fired: int = 0
    rank: int | None = None  # only in this torchrun rank (None: every process)


def parse(text: str) -> list[Fault]:
    """The faults of a spec (ValueError naming the bad entry)."""
    faults = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        entry, _, rank = entry.partition("@")
        parts = entry.split(":")
        if len(parts) not in (2, 3) or parts[0] not in KINDS:
            raise ValueError(f"{ENV}={text!r}: bad entry {entry!r}; write "
                             f"kind:step[:times][@rank] with kind one of {', '.join(KINDS)}")
        default = 0 if parts[0] == "nan_loss" else 1  # nan_loss: every step from N on
        faults.append(Fault(parts[0], int(parts[1]),
                            int(parts[2]) if len(parts) == 3 else default,
                            rank=int(rank) if rank else None))
    return faults


class FaultHooks(Hooks):
    """The hooks that inject the faults of a spec, each as often as it says."""

    def __init__(self, spec: str) -> None:
        rank = int(os.environ.get("RANK", "0"))
        self.rank = rank
        self.faults = [f for f in parse(spec) if f.rank is None or f.rank == rank]
        self.weight_log = os.environ.get(WEIGHT_LOG)
        self.once = os.environ.get("GRPO_FAULT_ONCE")

    def fires(self, kind: str, step: int) -> bool:
        """True when a fault of `kind` is due at `step` (and counts it as fired)."""
        for fault in self.faults:
            if fault.kind != kind:
                continue
            due = step >= fault.step if kind == "nan_loss" else step == fault.step
            if due and (fault.times == 0 or fault.fired < fault.times):
                if self._fired_before(f"{kind}:{step}@{self.rank}"):
                    continue
                fault.fired += 1
                return True
        return False

    def _fired_before(self, key: str) -> bool:
        """With GRPO_FAULT_ONCE: True when an earlier process fired `key`; else record it."""
        if not self.once:
            return False
        seen = open(self.once).read().split() if os.path.exists(self.once) else []
        if key in seen:
            return True
        with open(self.once, "a") as fh:
            fh.write(key + "\n")
        return False

    def before_rollout(self, step: int) -> None:
        if self.fires("kill", step):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.fires("oom_rollout", step):
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected by {ENV}, rollout)")

    def on_loss(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        return loss * float("nan") if self.fires("nan_loss", step) else loss

    def before_backward(self, step: int, micro: int, num_micro: int) -> None:
        if micro == num_micro - 1 and self.fires("oom_backward", step):
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected by {ENV}, backward)")

    def in_checkpoint(self, step: int) -> None:
        if self.fires("kill_in_checkpoint", step):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.fires("enospc_checkpoint", step):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def after_step(self, step: int, params: list[torch.nn.Parameter]) -> None:
        if not self.weight_log:
            return
        digest = hashlib.sha256()
        for p in params:
            digest.update(p.detach().cpu().contiguous().numpy().tobytes())
        with open(f"{self.weight_log}.rank{self.rank}.jsonl", "a") as fh:
            fh.write(json.dumps({"step": step, "sha256": digest.hexdigest()}) + "\n")

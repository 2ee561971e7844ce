"""Data parallelism under torchrun: one process per GPU (or per CPU share), torch.distributed.

    dist = start_distributed(device, timeout_s)   from torchrun's environment; SINGLE outside it
    dist.main                                     rank 0, the one process that writes files
    dist.sum(values) / dist.max(values)           element-wise over ranks (floats)
    dist.any(flag)                                True on every rank if it is True on one
    dist.gather(obj)                              every rank's obj, in rank order, on every rank
    dist.sum_grads(params)                        the one gradient all-reduce of an update
    dist.broadcast_params(params)                 rank 0's values everywhere (start of a run)
    dist.check(error) / dist.together(work)       a set-up failure on any rank fails them all
    is_peer_lost(exc)                             a collective failed: another rank is gone

`grpo train` run by torchrun (WORLD_SIZE > 1 in the environment) starts a process group: NCCL
when the policy is on CUDA (each rank on cuda:LOCAL_RANK), gloo on CPU. Every collective has
the group's timeout (trainer.dist_timeout_s), so a rank that stops answering makes the others
fail with an error instead of waiting for ever. With one process SINGLE answers every call
locally, so the trainer has one code path.

Why the module is not wrapped in DistributedDataParallel: DDP all-reduces inside the last
micro-batch's backward pass. A rank that runs out of memory there halves its micro-batch and
redoes the mini-batch (trainer/memory.py) while its peers already wait inside that backward
for its gradients; the retry would then feed the wrong collective and the group would hang.
Summing the accumulated gradients once, after every micro-batch of the mini-batch returned on
this rank (sum_grads, in buckets like DDP's), keeps the retry local and the all-reduce count
at exactly one per optimizer step. For LoRA the gradients are small (Qwen2.5-7B, r=64, every
linear layer: 161 M values), so overlapping the all-reduce with the backward pass, DDP's
other gain, is worth little.
"""

from __future__ import annotations

import datetime
import os
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Optional, Sequence, TypeVar

import torch

from grpo_cli.errors import UserError

T = TypeVar("T")
BUCKET_ELEMENTS = 2**24  # values per gradient all-reduce (64 MiB of fp32)


class PeerFailed(UserError):
    """A set-up error another rank reported (dist.check): rank 0 prints it, the rest exit
    quietly with the same code."""


def shared_error(message: str, rank: int) -> UserError:
    """An error every rank finds alike (the same config, the same summed numbers): rank 0's
    is printed, the others' is a PeerFailed, so the user reads it once."""
    return UserError(message) if rank == 0 else PeerFailed(message)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: Optional[str] = None  # None: one process, no group
    # Seconds spent in collectives so far (the gradient sums and the waits for slower ranks).
    clock: dict = field(default_factory=lambda: {"sync_s": 0.0}, compare=False, repr=False)

    def _timed(self, work: Callable[[], T]) -> T:
        t0 = time.perf_counter()
        try:
            return work()
        finally:
            self.clock["sync_s"] += time.perf_counter() - t0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def _device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else \
            torch.device("cpu")

    def _reduce(self, values: Sequence[float], op: str) -> list[float]:
        if not self.active:
            return [float(v) for v in values]
        import torch.distributed as td

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._device())
        self._timed(lambda: td.all_reduce(t, op=getattr(td.ReduceOp, op)))
        return t.tolist()

    def sum(self, values: Sequence[float]) -> list[float]:
        return self._reduce(values, "SUM")

    def max(self, values: Sequence[float]) -> list[float]:
        return self._reduce(values, "MAX")

    def any(self, flag: bool) -> bool:
        return self.max([1.0 if flag else 0.0])[0] > 0

    def gather(self, obj: Any) -> list[Any]:
        if not self.active:
            return [obj]
        import torch.distributed as td

        out: list[Any] = [None] * self.world
        self._timed(lambda: td.all_gather_object(out, obj))
        return out

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as td

            self._timed(td.barrier)

    def sum_grads(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Sum every rank's accumulated .grad of `params` in place (a missing one counts
        as zeros): one all-reduce per bucket of at most BUCKET_ELEMENTS values per dtype."""
        if not self.active:
            return
        import torch.distributed as td

        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
        for p in params:
            by_dtype.setdefault(p.grad.dtype, []).append(p)
        for group in by_dtype.values():
            for bucket in _buckets(group):
                flat = torch.cat([p.grad.reshape(-1) for p in bucket])  # [sum of numels]
                self._timed(partial(td.all_reduce, flat, op=td.ReduceOp.SUM))
                offset = 0
                for p in bucket:
                    n = p.grad.numel()
                    p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
                    offset += n

    def broadcast_params(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Rank 0's values of `params` on every rank."""
        if not self.active:
            return
        import torch.distributed as td

        with torch.no_grad():
            for p in params:
                td.broadcast(p.data, src=0)

    def check(self, error: Optional[UserError]) -> None:
        """Fail every rank when set-up failed on one: rank 0 raises the first failing rank's
        error (naming the rank when it is not 0), the others raise PeerFailed."""
        if not self.active:
            if error is not None:
                raise error
            return
        messages = self.gather(None if error is None else str(error))
        failed = [(r, m) for r, m in enumerate(messages) if m is not None]
        if not failed:
            return
        rank, message = failed[0]
        if self.main:
            raise UserError(message if rank == 0 else f"rank {rank}: {message}") from None
        raise PeerFailed(message) from None

    def together(self, work: Callable[[], T]) -> T:
        """work() on this rank; a UserError on any rank fails every rank (check). Set-up
        steps run this way, so a bad input is one line from rank 0, not a hang."""
        try:
            out = work()
        except UserError as exc:
            self.check(exc)
            raise
        self.check(None)
        return out

    def close(self) -> None:
        if self.active:
            import torch.distributed as td

            if td.is_initialized():
                td.destroy_process_group()


def _buckets(params: list[torch.nn.Parameter]) -> list[list[torch.nn.Parameter]]:
    out: list[list[torch.nn.Parameter]] = [[]]
    size = 0
    for p in params:
        if out[-1] and size + p.numel() > BUCKET_ELEMENTS:
            out.append([])
            size = 0
        out[-1].append(p)
        size += p.numel()
    return out


SINGLE = Dist()


def launched_world_size() -> int:
    """The world size torchrun (or accelerate launch) set; 1 when run as plain `grpo`."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def env_rank() -> int:
    """This process's rank from the launcher's environment (0 outside one)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def start_distributed(device: str, timeout_s: float) -> Dist:
    """The process group of a torchrun launch (SINGLE when WORLD_SIZE is 1 or unset).

    `device` is model.device: cuda (or auto with a GPU) uses NCCL with this rank on
    cuda:LOCAL_RANK; cpu uses gloo."""
    world = launched_world_size()
    if world <= 1:
        return SINGLE
    import torch.distributed as td

    rank, local = env_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    on_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if on_cuda:
        if local >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK={local} but this node has {torch.cuda.device_count()} "
                            "CUDA devices: launch at most that many processes per node "
                            "(torchrun --nproc_per_node)")
        torch.cuda.set_device(local)
    backend = "nccl" if on_cuda else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    if not td.is_initialized():
        td.init_process_group(backend, timeout=timeout, **_elastic_store(rank, world, timeout))
    return Dist(rank=rank, world=world, local_rank=local, backend=backend)


def _elastic_store(rank: int, world: int, timeout: datetime.timedelta) -> dict[str, Any]:
    """Under torchrun, the group's store: the launcher's TCPStore under a prefix of the run
    and the restart count. (torch 2.13's own env:// set-up fails to connect the group again
    after `torchrun --max-restarts` restarts the workers: gloo's connectFullMesh is refused.)
    Elsewhere (no TORCHELASTIC_RUN_ID): torch's env:// defaults."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if not run_id or "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        return {}
    import torch.distributed as td

    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = td.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                        is_master=False, timeout=timeout)
    return {"store": td.PrefixStore(f"grpo/{run_id}/{attempt}", store), "rank": rank,
            "world_size": world}


def is_peer_lost(exc: BaseException) -> bool:
    """A collective failed because another rank crashed, was killed or stopped answering
    (gloo and NCCL raise RuntimeErrors, torch.distributed's own errors are DistError)."""
    import torch.distributed as td

    if isinstance(exc, getattr(td, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(s in text for s in PEER_LOST_SIGNS)


PEER_LOST_SIGNS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
                   "gloo", "NCCL", "Timed out", "timed out", "Socket Timeout")


def peer_lost_reason(exc: BaseException) -> str:
    """The first sentence of a collective's error, without gloo's source location."""
    import re

    text = re.sub(r"\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", str(exc).strip())
    first = text.splitlines()[0] if text else type(exc).__name__
    return first.split(". ")[0][:160]

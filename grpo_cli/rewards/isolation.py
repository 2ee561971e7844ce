"""Run reward calls in daemon threads, at most `num_workers` at once, each with a deadline.

A call that passes its deadline is abandoned: Python cannot kill a thread, so it runs on in
the background and its result is ignored. Daemon threads (not a ThreadPoolExecutor, whose
threads are joined at exit) make sure an abandoned call never blocks the interpreter's exit.
Work that can truly hang (sympy) belongs in a process with a hard limit (procpool.py); this
layer guarantees the training loop goes on whatever a reward does.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence


@dataclass
class CallOutcome:
    """status: 'ok' (value = the return value), 'error' (error = the exception) or 'timeout'."""

    status: str
    value: Any = None
    error: Optional[BaseException] = None


def run_isolated(calls: Sequence[Callable[[], Any]], timeout_s: float,
                 num_workers: int) -> List[CallOutcome]:
    """Run each call in its own daemon thread, `num_workers` at a time, `timeout_s` each.

    A call's clock starts when its thread starts, so waiting for a free worker is not counted.
    """
    outcomes: List[Optional[CallOutcome]] = [None] * len(calls)
    finished: "queue.Queue[int]" = queue.Queue()
    boxes: Dict[int, CallOutcome] = {}

    def target(i: int) -> None:
        try:
            boxes[i] = CallOutcome("ok", value=calls[i]())
        except BaseException as e:  # noqa: BLE001 - every failure is the reward's, reported
            boxes[i] = CallOutcome("error", error=e)
        finished.put(i)

    pending = deque(range(len(calls)))
    deadlines: Dict[int, float] = {}  # running call -> monotonic deadline
    while pending or deadlines:
        while pending and len(deadlines) < num_workers:
            i = pending.popleft()
            deadlines[i] = time.monotonic() + timeout_s
            threading.Thread(target=target, args=(i,), daemon=True,
                             name=f"reward-call-{i}").start()
        wait = max(0.0, min(deadlines.values()) - time.monotonic())
        try:
            done = finished.get(timeout=wait)
            if done in deadlines:  # not already given up on
                del deadlines[done]
                outcomes[done] = boxes[done]
        except queue.Empty:
            pass
        now = time.monotonic()
        for i in [i for i, deadline in deadlines.items() if deadline <= now]:
            del deadlines[i]
            outcomes[i] = CallOutcome("timeout")
    return [o if o is not None else CallOutcome("timeout") for o in outcomes]

"""Ctrl-C and SIGTERM as a request to stop at the end of the step (train.run honours it)."""

from __future__ import annotations

import signal
import sys
import time


class StopRequest:
    """Turns the first SIGINT/SIGTERM into 'stop after this step'; a second one stops now.

    Under torchrun a Ctrl-C reaches each rank twice (from the terminal and forwarded by the
    launcher): a repeat within `same_within_s` of the first is the same request. `quiet`
    (ranks > 0): rank 0 alone says what happens."""

    def __init__(self, quiet: bool = False, same_within_s: float = 0.0,
                 doing: str = "finishing this step and saving a checkpoint") -> None:
        self.signum: int | None = None
        self.quiet, self.same_within_s, self.doing = quiet, same_within_s, doing
        self._first = 0.0
        self._old = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            if time.monotonic() - self._first <= self.same_within_s:
                return
            raise KeyboardInterrupt
        self.signum, self._first = signum, time.monotonic()
        if not self.quiet:
            print(f"\nstop requested: {self.doing} (press Ctrl-C again to stop now; "
                  "the last checkpoint stays)", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

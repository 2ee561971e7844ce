"""Many runs at once: the right verdicts, no leaked processes or temp dirs, throughput printed.

The default run does 32 programs with 4 workers; `-m slow` does issue 19's 256 with 8 (each a
mix of passing, failing, crashing and leaving a background process behind).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from grpo_cli.sandbox import TestProgram
from grpo_cli.sandbox.slots import Slots

KINDS = {
    "passed": "def f(x):\n    return x + 1\n",
    "failed": "def f(x):\n    return x\n",
    "crashed": "raise ValueError('no')\n",
    "syntax_error": "def f(x) return\n",
}
LEAVER = ("import os, time\nif os.fork() == 0:\n    time.sleep(100)\n    os._exit(0)\n"
          "def f(x):\n    return x + 1\n")
STEPS = [("assert f(1) == 2", True), ("assert f(5) == 6", True)]


def _load(sandbox, n: int, workers: int) -> None:
    programs = []
    for i in range(n):
        kind = list(KINDS)[i % len(KINDS)]
        leave = os.geteuid() == 0 and i % 8 == 0  # leftovers are only reapable per uid
        programs.append((kind, LEAVER if leave and kind == "passed" else KINDS[kind]))
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda p: sandbox.run(TestProgram(p[1], STEPS)), programs))
    seconds = time.perf_counter() - start
    wrong = [(i, kind, r.status, r.detail, r.stderr[-300:])
             for i, ((kind, _), r) in enumerate(zip(programs, results)) if r.status != kind]
    assert not wrong, wrong
    print(f"\nsandbox load: {n} programs, {workers} workers, {seconds:.1f} s, "
          f"{n / seconds:.1f} programs/s, mean run {sum(r.seconds for r in results) / n:.2f} s")


def test_load_small(sandbox):
    _load(sandbox, 32, 4)


@pytest.mark.slow
def test_load_256_with_8_workers(sandbox):
    _load(sandbox, 256, 8)


def test_slots_are_exclusive_across_threads():
    slots = Slots()
    taken = [slots.acquire() for _ in range(3)]
    assert len({uid for uid, _ in taken}) == 3
    for _, fd in taken:
        slots.release(fd)

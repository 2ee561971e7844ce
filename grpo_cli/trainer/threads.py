"""How many threads torch uses on CPU (`trainer.cpu_threads`).

On cores shared with other processes, torch's default (one thread per core) makes its
threads wait for each other at every parallel region: slower with 2 threads than with 1 on
a busy 2-core machine, faster in a quiet moment (`scripts/bench_threads.py`; the numbers are
in the README, "CPU threads"). So `null` (auto) counts the cores this process may use and
takes away the ones already busy (the 1-minute load average), keeping at least one:

    cpu_threads = max(1, cores - round(load average))

An explicit `trainer.cpu_threads=N` wins, then `OMP_NUM_THREADS` when it is set. On CUDA the
GPU does the work and torch's default is left alone unless trainer.cpu_threads is set.
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger("grpo")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_threads(cores: int, load: float) -> int:
    """Cores not already busy, at least 1."""
    return max(1, min(cores, cores - round(load)))


def choose_threads(setting: int | None, on_cpu: bool) -> tuple[int | None, str]:
    """(threads to set or None to leave torch alone, the reason shown at start)."""
    if setting is not None:
        return setting, "trainer.cpu_threads"
    if os.environ.get("OMP_NUM_THREADS"):
        return int(torch.get_num_threads()), "from OMP_NUM_THREADS"
    if not on_cpu:
        return None, "CUDA run: torch's default"
    cores, load = usable_cores(), os.getloadavg()[0]
    return auto_threads(cores, load), (f"auto: {cores} cores, load average {load:.1f}; "
                                       "set trainer.cpu_threads=N to choose")


def set_cpu_threads(setting: int | None, device: str) -> int:
    """Apply trainer.cpu_threads for a run on `device` (auto/cpu/cuda); say what was chosen."""
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    threads, why = choose_threads(setting, on_cpu)
    if threads is not None:
        torch.set_num_threads(threads)
    log.info("cpu threads: %d (%s)", torch.get_num_threads(), why)
    return torch.get_num_threads()

"""Helpers for the reliability tests: run `grpo train` on the tiny model in subprocesses.

A run costs about 4 s of imports plus ~0.5 s per step on one CPU thread, so the tests keep to
1-3 steps and run independent bad-input cases two at a time.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tiny_run

HERE = Path(__file__).resolve().parent


def base_args(model: Path, out: Path, steps: int, *extra: str) -> list[str]:
    """The shared fast CPU config (tests/support/tiny_run.py), with this folder's toy reward."""
    return tiny_run.base_args(model, out, steps, *extra, reward="faulty_rewards:digit_share")


def run_env(fault: str | None = None) -> dict:
    return tiny_run.run_env(HERE, fault)


def grpo(*args: str, fault: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`grpo train ARGS` in a subprocess (with the faults of spec `fault` when given, see
    tests/support/fault_hooks.py)."""
    return subprocess.run([*tiny_run.train_command(fault), *args], capture_output=True,
                          text=True, env=run_env(fault), timeout=timeout)


def grpo_many(arg_lists: list[list[str]],
              faults: list[str | None] | None = None) -> list[subprocess.CompletedProcess]:
    """Several independent `grpo train` runs (each with its GRPO_FAULT), two at a time."""
    faults = faults or [None] * len(arg_lists)
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda a, f: grpo(*a, fault=f), arg_lists, faults))


metrics = tiny_run.metrics


assert_one_error_line = tiny_run.assert_one_error_line


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""

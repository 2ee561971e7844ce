"""What a run prints: progress bars (rich), one compact line per step, warnings.

Three views, picked by `logger.console` (variants as data, see `VIEWS`):
- rich:  a step bar with ETA, a rollout bar within each step, and the step lines above them.
- plain: the step lines only (used automatically when stdout is not a terminal, e.g. a log
         file or CI, where redrawn bars would be noise).
- quiet: nothing on stdout; warnings still go to stderr (a script wants to know that the
         run is unhealthy or that W&B was switched off).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

# (label, metric key, format) of the compact per-step line, in order; absent keys are skipped.
LINE_FIELDS: list[tuple[str, str, str]] = [
    ("reward", "reward/mean", "{:.3f}"),
    ("acc", "accuracy", "{:.3f}"),
    ("kl", "kl", "{:.4f}"),
    ("len", "completion_len/mean", "{:.0f}"),
    ("clip", "completion_len/clipped_frac", "{:.0%}"),
    ("zero_std", "frac_zero_std", "{:.0%}"),
    ("loss", "sft/loss", "{:.4f}"),  # grpo sft (GRPO's `loss` is not shown: see README)
    ("eval loss", "eval/loss", "{:.4f}"),  # grpo sft's held-out loss
    ("tok/s", "tokens_per_s", "{:.0f}"),
    ("mem", "mem/peak_gb", "{:.1f}GB"),
    ("time", "time/step_s", "{:.1f}s"),
]


def format_step_line(step: int, max_steps: int, metrics: dict[str, float]) -> str:
    """`step 12/100 | reward 0.512 | acc 0.470 | kl 0.0031 | len 182 | ...`."""
    parts = [f"step {step}/{max_steps}"]
    for label, key, fmt in LINE_FIELDS:
        value = metrics.get(key)
        if isinstance(value, (int, float)) and value == value:  # skip missing and NaN
            parts.append(f"{label} {fmt.format(value)}")
        elif key in metrics:
            parts.append(f"{label} nan")
    return " | ".join(parts)


class Progress:
    """What `rollout_progress` yields: a bar that `update(n)` advances (no-op by default)."""

    def __init__(self, advance: Optional[Callable[[int], None]] = None) -> None:
        self._advance = advance

    def update(self, n: int = 1) -> None:
        if self._advance is not None:
            self._advance(n)


class QuietView:
    """Prints warnings to stderr and nothing else."""

    def start(self, max_steps: int, start_step: int) -> None:
        self.max_steps = max_steps

    def step(self, step: int, completed: int, metrics: dict[str, float]) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=sys.stderr, flush=True)

    @contextmanager
    def rollout_progress(self, total: int) -> Iterator[Progress]:
        yield Progress()

    def close(self) -> None:
        pass


class PlainView(QuietView):
    """One line per step and info lines on stdout; no bars."""

    def step(self, step: int, completed: int, metrics: dict[str, float]) -> None:
        print(format_step_line(step, self.max_steps, metrics), flush=True)

    def info(self, message: str) -> None:
        print(message, flush=True)


class RichView(QuietView):
    """A step bar with ETA and a per-step rollout bar; lines scroll above the bars."""

    def start(self, max_steps: int, start_step: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self.max_steps = max_steps
        self.console = Console()
        self.progress = RichProgress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=self.console, transient=True,
        )
        self.steps_task = self.progress.add_task("train", total=max_steps, completed=start_step)
        self.progress.start()

    def step(self, step: int, completed: int, metrics: dict[str, float]) -> None:
        self.console.print(format_step_line(step, self.max_steps, metrics),
                           markup=False, highlight=False, soft_wrap=True)
        self.progress.update(self.steps_task, completed=completed)

    def info(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        from rich.text import Text

        self.console.print(Text("warning: ", style="bold yellow") + Text(message))

    @contextmanager
    def rollout_progress(self, total: int) -> Iterator[Progress]:
        task = self.progress.add_task("  rollout", total=total)
        try:
            yield Progress(lambda n: self.progress.advance(task, n))
        finally:
            self.progress.remove_task(task)

    def close(self) -> None:
        self.progress.stop()


VIEWS: dict[str, Callable[[], QuietView]] = {
    "rich": RichView, "plain": PlainView, "quiet": QuietView,
}


def make_view(console: str, is_tty: Optional[bool] = None) -> QuietView:
    """The view for logger.console; rich falls back to plain when stdout is not a TTY."""
    if is_tty is None:
        is_tty = sys.stdout.isatty()
    if console == "rich" and not is_tty:
        console = "plain"
    return VIEWS[console]()

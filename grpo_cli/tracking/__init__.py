"""Everything that shows a run: metrics.jsonl, samples, W&B, the console, plots, health checks.

The training loop talks to one `Tracker` and never branches on what is enabled:

    tracker = build_tracker(cfg.logger, run_dir, run_name, resolved_config, max_steps)
    with tracker.rollout_progress(total) as bar: ... bar.update(n)
    tracker.log_step(step, metrics)          # metrics.jsonl + W&B + console + health checks
    tracker.log_samples(step, rows)          # samples/step-N.jsonl + W&B completions table
    tracker.log_eval(step, report)           # eval/... metrics, logged with the step's
    tracker.close(plot=True)                 # finish W&B, write plots/

Files in <run_dir>: metrics.jsonl (one line per train step; an eval step's line holds its
eval/... keys too; non-finite numbers are null, see metrics_file), samples/step-N.jsonl,
warnings.log (every warning with its step), wandb/ (W&B run files), plots/*.png.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ContextManager, Optional

from grpo_cli.config.schema import LoggerConfig
from grpo_cli.errors import UserError
from grpo_cli.tracking.console import Progress, QuietView, make_view
from grpo_cli.tracking.health import HealthMonitor, HealthThresholds, HealthWarning
from grpo_cli.tracking.metrics_file import (
    MetricsFile,
    read_metrics,
    read_metrics_rows,
    write_samples,
)
from grpo_cli.tracking.plots import plot_run
from grpo_cli.tracking.wandb_logger import NullBackend, SafeBackend, start_wandb

__all__ = [
    "Tracker", "build_tracker", "plot_run", "read_metrics", "HealthMonitor",
    "HealthThresholds", "HealthWarning", "Progress",
]

WARNINGS_FILE = "warnings.log"
COMPLETIONS_KEY = "completions"
WARNINGS_KEY = "health/warnings"


def _scalar(value: Any) -> Any:
    """A plain Python number from a numpy / torch scalar (NaN kept: W&B accepts it)."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    return value


def flatten_report(report: dict[str, Any], prefix: str = "eval") -> dict[str, float]:
    """Numeric leaves of a (nested) eval report as {"eval/a/b": x}; other values dropped."""
    flat: dict[str, float] = {}
    for key, value in report.items():
        value = _scalar(value)
        name = key if str(key).startswith(prefix + "/") else f"{prefix}/{key}"
        if isinstance(value, dict):
            flat.update(flatten_report(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = value
    return flat


def completion_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Table columns: step, prompt, gold (when the rows have it), completion, each reward
    component, reward, advantage."""
    components = sorted({k for row in rows for k in row if k.startswith("rewards/")})
    gold = ["gold"] if any("gold" in row for row in rows) else []
    return ["step", "prompt", *gold, "completion", *components, "reward", "advantage"]


class Tracker:
    """One object the loop logs to; each part (file, W&B, console, health) is always there."""

    def __init__(self, view: QuietView, run_dir: Path, max_steps: int, start_step: int = 0,
                 completions_every: int = 0, plot_at_end: bool = True,
                 health: Optional[HealthMonitor] = None) -> None:
        self.view = view
        self.run_dir = Path(run_dir)
        self.max_steps = max_steps
        self.start_step = start_step
        self.completions_every = completions_every
        self.plot_at_end = plot_at_end
        self.health = health
        # start_step = steps already done; MetricsFile takes the first new step.
        self.metrics = MetricsFile(self.run_dir, start_step + 1 if start_step else 0)
        self.backend: SafeBackend = SafeBackend(NullBackend(), self.warn)
        self._steps_logged = 0
        self._last_step = start_step
        self._table_columns: Optional[list[str]] = None
        self._next_table_step: Optional[int] = None
        self._closed = False
        self.view.start(max_steps, start_step)

    # --- per step -------------------------------------------------------------------------
    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        """Record one train step everywhere and run the health checks on it."""
        values = {k: _scalar(v) for k, v in metrics.items() if k != "step"}
        self._last_step = step
        self._steps_logged += 1
        self.metrics.write(step, values)
        self.backend.log(values, step)
        done = min(self.max_steps, self.start_step + self._steps_logged)
        self.view.step(step, done, values)
        if self.health is not None:
            for warning in self.health.update(step, values):
                self.warn(str(warning), step=step)

    def log_samples(self, step: int, rows: list[dict[str, Any]],
                    write_file: bool = True) -> Optional[Path]:
        """Write samples/step-<N>.jsonl (when `write_file`: the trainer asks every
        `trainer.log_every` steps); add the rows to the W&B completions table when due.

        The table gets rows at most once every `logger.completions_every` steps (the first
        call always), whatever `write_file` is; it is logged incrementally, so earlier rows
        stay visible.
        """
        path = write_samples(self.run_dir, step, rows) if write_file else None
        due = self._next_table_step is None or step >= self._next_table_step
        if self.completions_every > 0 and rows and due:
            if self._table_columns is None:
                self._table_columns = completion_columns(rows)
            cols = self._table_columns
            table_rows = [[step if c == "step" else _scalar(row.get(c)) for c in cols]
                          for row in rows]
            self.backend.add_table_rows(COMPLETIONS_KEY, cols, table_rows, step)
            self._next_table_step = step + self.completions_every
        return path

    def log_eval(self, step: int, report: dict[str, Any]) -> dict[str, float]:
        """Show an eval report's numbers and return them as eval/... metrics: the caller adds
        them to the step's metrics, so that metrics.jsonl keeps one line per step."""
        flat = flatten_report(report)
        shown = " | ".join(f"{k} {v:.4g}" for k, v in flat.items())
        self.view.info(f"eval step {step} | {shown}")
        return flat

    def rollout_progress(self, total: int) -> ContextManager[Progress]:
        """A context manager yielding a bar; `.update(n)` after n more sequences are done."""
        return self.view.rollout_progress(total)

    # --- messages and artifacts ------------------------------------------------------------
    def warn(self, message: str, step: Optional[int] = None) -> None:
        """Print a warning and log it (warnings.log and a W&B table)."""
        step = self._last_step if step is None else step
        self.view.warn(message)
        try:
            with (self.run_dir / WARNINGS_FILE).open("a", encoding="utf-8") as fh:
                fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} step {step}: {message}\n")
        except OSError:
            pass  # a full disk must not turn a warning into a crash
        if getattr(self, "backend", None) is not None:
            self.backend.add_table_rows(WARNINGS_KEY, ["step", "message"], [[step, message]],
                                        step)

    def info(self, message: str) -> None:
        self.view.info(message)

    def log_checkpoint(self, path: Path, step: int) -> None:
        """Upload a checkpoint folder as a W&B artifact (when logger.wandb.log_checkpoints)."""
        self.backend.log_checkpoint(Path(path), step)

    def close(self, plot: bool = True) -> list[Path]:
        """Finish W&B, close files, stop the bars; write plots when asked and plot_at_end."""
        if self._closed:
            return []
        self._closed = True
        self.metrics.close()
        self.backend.finish()
        self.view.close()
        if not (plot and self.plot_at_end):
            return []
        try:
            paths = plot_run(self.run_dir)
        except UserError as exc:
            self.view.info(f"no plots: {exc}")
            return []
        except Exception as exc:  # noqa: BLE001 - a chart must not fail a finished run
            self.view.warn(f"plotting failed ({type(exc).__name__}: {exc})")
            return []
        self.view.info(f"plots: {self.run_dir / 'plots'} ({len(paths)} charts)")
        return paths

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close(plot=exc_type is None)


def build_tracker(cfg_logger: LoggerConfig, run_dir: Path, run_name: str,
                  resolved_config: dict[str, Any], max_steps: int, start_step: int = 0, *,
                  is_tty: Optional[bool] = None,
                  health_thresholds: Optional[HealthThresholds] = None,
                  wandb_init_timeout: float = 30.0) -> Tracker:
    """The run's Tracker: console view per logger.console, W&B per logger.wandb.mode.

    start_step > 0 (resume) keeps metrics.jsonl lines before it, replays them through the
    health checks (so a resumed run warns exactly as an unbroken one would) and reattaches to
    the same W&B run id when there is one.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    health = HealthMonitor(health_thresholds) if cfg_logger.health_checks else None
    tracker = Tracker(make_view(cfg_logger.console, is_tty), run_dir, max_steps, start_step,
                      cfg_logger.completions_every, cfg_logger.plot_at_end, health)
    if health is not None and start_step > 0:
        for row in read_metrics_rows(tracker.metrics.path):
            if "reward/mean" in row and isinstance(row.get("step"), int):
                health.update(row["step"], {k: v for k, v in row.items() if k != "step"})
    tracker.backend = start_wandb(cfg_logger.wandb, run_dir, run_name, resolved_config,
                                  warn=tracker.warn, info=tracker.info,
                                  resume=start_step > 0, init_timeout=wandb_init_timeout)
    return tracker

"""`grpo plot <run_dir>`: PNG charts of a run's metrics.jsonl, written to <run_dir>/plots/.

Works offline and on a run that is still going (it reads whatever lines are there). Uses
matplotlib's object API on `Figure` objects, which render with the Agg backend and never
touch pyplot's global state or a display.

Charts are data (`CHARTS`): a file name, a title and the series it draws. A chart none of
whose metrics were logged is skipped (e.g. kl when algo.beta=0 and kl is absent). Noisy
per-step series get a moving average drawn over them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from grpo_cli.tracking.metrics_file import METRICS_FILE, read_metrics

PLOTS_DIR = "plots"
Series = tuple[list[float], list[float]]  # (steps, values)


@dataclass
class Chart:
    """One PNG: each entry of `keys` is a metric name or a regex matched against names."""

    filename: str
    title: str
    keys: list[str]
    ylabel: str = ""
    # Draw the series stacked (areas summing to a total) instead of as lines.
    stacked: bool = False
    labels: dict[str, str] = field(default_factory=dict)


CHARTS: list[Chart] = [
    Chart("reward.png", "Reward (total and per component)",
          ["reward/mean", r"re:rewards/[^/]+/mean"], "reward"),
    Chart("accuracy.png", "Accuracy", ["accuracy", "eval/accuracy"], "accuracy"),
    Chart("loss.png", "SFT loss (completion tokens)", ["sft/loss", "eval/loss"], "nats / token"),
    Chart("kl.png", "KL to the reference policy (k3, per token)", ["kl"], "KL"),
    Chart("completion_len.png", "Completion length", ["completion_len/mean"], "tokens"),
    Chart("frac_zero_std.png", "Share of groups with equal rewards (no signal)",
          ["frac_zero_std"], "fraction"),
    Chart("time.png", "Time per step", ["time/rollout_s", "time/train_s"], "seconds",
          stacked=True, labels={"time/rollout_s": "rollout", "time/train_s": "training"}),
]


def _matching_keys(pattern: str, names: list[str]) -> list[str]:
    if pattern.startswith("re:"):
        regex = re.compile(pattern[3:])
        return sorted(n for n in names if regex.fullmatch(n))
    return [pattern] if pattern in names else []


def _series(rows: list[dict], key: str) -> Series:
    """(steps, values) of key over the rows holding a finite number for it."""
    steps, values = [], []
    for row in rows:
        value, step = row.get(key), row.get("step")
        if isinstance(value, (int, float)) and isinstance(step, (int, float)) \
                and math.isfinite(value):
            steps.append(float(step))
            values.append(float(value))
    return steps, values


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to `window` values (shorter at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _draw_lines(ax, data: dict[str, Series], labels: dict[str, str]) -> None:
    for key, (steps, values) in data.items():
        label = labels.get(key, key)
        if len(values) >= 20:
            line, = ax.plot(steps, values, alpha=0.3, linewidth=1)
            window = max(5, len(values) // 20)
            ax.plot(steps, moving_average(values, window), color=line.get_color(),
                    linewidth=2, label=f"{label} (avg {window})")
        else:
            ax.plot(steps, values, marker="o", markersize=3, label=label)


def _draw_stacked(ax, data: dict[str, Series], labels: dict[str, str]) -> None:
    """Stack series on the steps they all share (e.g. rollout + training time)."""
    common = sorted(set.intersection(*(set(s) for s, _ in data.values())))
    if not common:
        return _draw_lines(ax, data, labels)
    stacks = [[dict(zip(*series))[s] for s in common] for series in data.values()]
    ax.stackplot(common, *stacks, labels=[labels.get(k, k) for k in data], alpha=0.8)


def render_chart(chart: Chart, rows: list[dict], out_dir: Path) -> Optional[Path]:
    """Write one chart's PNG; None when none of its metrics holds a value."""
    from matplotlib.figure import Figure

    names = sorted({k for row in rows for k in row})
    keys = [k for pattern in chart.keys for k in _matching_keys(pattern, names)]
    data = {k: _series(rows, k) for k in dict.fromkeys(keys)}
    data = {k: s for k, s in data.items() if s[1]}
    if not data:
        return None
    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.add_subplot()
    draw: Callable = _draw_stacked if chart.stacked else _draw_lines
    draw(ax, data, chart.labels)
    ax.set_title(chart.title)
    ax.set_xlabel("step")
    ax.set_ylabel(chart.ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    path = out_dir / chart.filename
    fig.savefig(path, format="png")
    return path


def plot_run(run_dir: Path, charts: Optional[list[Chart]] = None) -> list[Path]:
    """Write the PNG charts of <run_dir>/metrics.jsonl to <run_dir>/plots/; return their paths.

    A missing or empty metrics.jsonl raises UserError naming the file.
    """
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir / METRICS_FILE)
    out_dir = run_dir / PLOTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [render_chart(chart, rows, out_dir) for chart in (charts or CHARTS)]
    return [path for path in written if path is not None]

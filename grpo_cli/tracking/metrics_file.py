"""The run's local record: `metrics.jsonl` (one JSON object per line) and `samples/step-N.jsonl`.

These files are the source of truth for a run; W&B is a mirror. Every line is flushed as
it is written, so a crashed or killed run keeps every finished step, and `grpo plot` or
`tail -f` can read a run that is still going.

Number encoding: JSON has no NaN or infinity, and Python's `json` would write the
non-standard tokens `NaN` / `Infinity` that most other parsers reject. Every non-finite
float (NaN, +inf, -inf) is therefore written as `null`; readers treat null as "no value at
this step". Integers stay integers; numpy / torch scalars are converted with `.item()`.

Resuming: opening `metrics.jsonl` with `start_step=S` keeps only the lines whose step is
below S (the steps the checkpoint has seen), so a resumed run never holds duplicate steps.
`start_step=0` starts a fresh file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from grpo_cli.errors import UserError

METRICS_FILE = "metrics.jsonl"
SAMPLES_DIR = "samples"


def json_safe(value: Any) -> Any:
    """A JSON-encodable copy of value: non-finite floats -> None, scalars unwrapped."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy / torch scalar
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    try:
        return json_safe(float(value))
    except (TypeError, ValueError):
        return str(value)


def dumps(record: dict[str, Any]) -> str:
    """One JSON line (no NaN/Infinity tokens can occur: see json_safe)."""
    return json.dumps(json_safe(record), ensure_ascii=False, allow_nan=False)


class MetricsFile:
    """Appends one flushed JSON line per call to <run_dir>/metrics.jsonl."""

    def __init__(self, run_dir: Path, start_step: int = 0) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = _lines_before(self.path, start_step) if start_step > 0 else []
        self._fh = self.path.open("w", encoding="utf-8")
        for line in kept:
            self._fh.write(line + "\n")
        self._fh.flush()

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        """Write {"step": step, **metrics} as one line and flush it."""
        self._fh.write(dumps({"step": int(step), **metrics}) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def _lines_before(path: Path, start_step: int) -> list[str]:
    """The lines of an existing metrics file whose step is below start_step."""
    if not path.exists():
        return []
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            step = json.loads(line).get("step")
        except (json.JSONDecodeError, AttributeError):
            continue  # a line cut short by a crash
        if isinstance(step, int) and step < start_step:
            kept.append(line)
    return kept


def write_samples(run_dir: Path, step: int, rows: list[dict[str, Any]]) -> Path:
    """Write one step's completions to <run_dir>/samples/step-<step>.jsonl; return the path.

    Rows that carry a `group` (the G completions of one prompt) keep `prompt` on the first
    row of the group only: a chat-templated prompt repeated G times buried the completions.
    """
    path = Path(run_dir) / SAMPLES_DIR / f"step-{int(step)}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    previous_group = None
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            group = row.get("group")
            if group is not None and group == previous_group:
                row = {k: v for k, v in row.items() if k != "prompt"}
            previous_group = group
            fh.write(dumps({"step": int(step), **row}) + "\n")
    return path


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a metrics.jsonl; a missing or empty file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: metrics file not found (is this a run directory?)")
    rows = read_metrics_rows(path)
    if not rows:
        raise UserError(f"{path}: metrics file is empty (no step was logged)")
    return rows


def read_metrics_rows(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a metrics.jsonl ([] when there is none)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line of a run killed mid-write
        if isinstance(row, dict):
            rows.append(row)
    return rows

"""plot_run: valid, non-empty PNGs from a synthetic metrics.jsonl; clear errors otherwise."""

from __future__ import annotations

import json
import math

import pytest

from grpo_cli.errors import UserError
from grpo_cli.tracking.plots import moving_average, plot_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _write_metrics(run_dir, steps: int = 30) -> None:
    with (run_dir / "metrics.jsonl").open("w") as fh:
        for s in range(1, steps + 1):
            row = {"step": s, "reward/mean": 0.3 + 0.01 * s, "rewards/correctness/mean": 0.01 * s,
                   "rewards/format/mean": 0.5, "accuracy": 0.01 * s, "kl": 0.001 * s,
                   "completion_len/mean": 200 - s, "frac_zero_std": 0.3,
                   "time/rollout_s": 2.0, "time/train_s": 1.0,
                   "loss": None if s == 3 else 0.0}  # a non-finite value written as null
            fh.write(json.dumps(row) + "\n")
            if s % 10 == 0:
                fh.write(json.dumps({"step": s, "eval/accuracy": 0.02 * s}) + "\n")


def test_plot_run_writes_valid_pngs(tmp_path) -> None:
    _write_metrics(tmp_path)
    paths = plot_run(tmp_path)
    names = sorted(p.name for p in paths)
    assert names == ["accuracy.png", "completion_len.png", "frac_zero_std.png", "kl.png",
                     "reward.png", "time.png"]
    for path in paths:
        assert path.parent == tmp_path / "plots"
        data = path.read_bytes()
        assert data[:8] == PNG_SIGNATURE
        assert len(data) > 5000, f"{path.name} looks empty ({len(data)} bytes)"


def test_charts_without_data_are_skipped(tmp_path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "reward/mean": 0.5}\n'
                                            '{"step": 2, "reward/mean": NaN}\n')
    assert [p.name for p in plot_run(tmp_path)] == ["reward.png"]


def test_missing_or_empty_metrics_is_a_user_error(tmp_path) -> None:
    with pytest.raises(UserError, match=str(tmp_path / "metrics.jsonl")):
        plot_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(UserError, match="empty"):
        plot_run(tmp_path)


def test_moving_average() -> None:
    # window 2: [1], [1,3], [3,5], [5,7] -> 1, 2, 4, 6
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert all(math.isfinite(v) for v in moving_average([0.5] * 50, 7))

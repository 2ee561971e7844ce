"""metrics.jsonl and samples/: valid JSON lines, non-finite numbers as null, resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from grpo_cli.errors import UserError
from grpo_cli.tracking.metrics_file import (
    MetricsFile,
    json_safe,
    read_metrics,
    write_samples,
)


def test_lines_are_json_with_the_given_values(tmp_path) -> None:
    mf = MetricsFile(tmp_path)
    mf.write(1, {"reward/mean": 0.5, "accuracy": 0.25, "health/skipped_steps": 0})
    mf.write(2, {"reward/mean": 0.75, "loss": -1e-3})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()  # flushed before close
    assert [json.loads(line) for line in lines] == [
        {"step": 1, "reward/mean": 0.5, "accuracy": 0.25, "health/skipped_steps": 0},
        {"step": 2, "reward/mean": 0.75, "loss": -1e-3},
    ]
    mf.close()


def test_non_finite_numbers_are_null(tmp_path) -> None:
    mf = MetricsFile(tmp_path)
    mf.write(1, {"loss": float("nan"), "kl": float("inf"), "grad_norm": -math.inf, "lr": 1e-5})
    mf.close()
    line = (tmp_path / "metrics.jsonl").read_text().strip()
    assert "NaN" not in line and "Infinity" not in line
    assert json.loads(line) == {"step": 1, "loss": None, "kl": None, "grad_norm": None,
                                "lr": 1e-5}


def test_json_safe_unwraps_tensor_and_numpy_scalars() -> None:
    assert json_safe(torch.tensor(0.5)) == 0.5
    assert json_safe(np.float32(0.25)) == 0.25
    assert json_safe(np.int64(3)) == 3 and isinstance(json_safe(np.int64(3)), int)
    assert json_safe(torch.tensor(float("nan"))) is None
    assert json_safe({"a": [1.0, float("inf")], "b": True}) == {"a": [1.0, None], "b": True}


def test_resume_keeps_steps_before_start(tmp_path) -> None:
    mf = MetricsFile(tmp_path)
    for step in range(1, 6):
        mf.write(step, {"reward/mean": step / 10})
    mf.close()
    with (tmp_path / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 6, "rew')  # a line cut short by a crash
    resumed = MetricsFile(tmp_path, start_step=4)  # the checkpoint saw steps 1..3
    resumed.write(4, {"reward/mean": 0.9})
    resumed.close()
    assert [row["step"] for row in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]
    fresh = MetricsFile(tmp_path)  # start_step=0: a new run starts a new file
    fresh.close()
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_samples_file_per_step(tmp_path) -> None:
    rows = [{"prompt": "2+2?", "completion": "4", "reward": 1.0, "advantage": 0.5,
             "rewards/correctness": 1.0}]
    path = write_samples(tmp_path, 7, rows)
    assert path == tmp_path / "samples" / "step-7.jsonl"
    assert json.loads(path.read_text()) == {"step": 7, **rows[0]}


def test_read_metrics_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(UserError, match="metrics.jsonl: metrics file not found"):
        read_metrics(tmp_path / "metrics.jsonl")
    (tmp_path / "metrics.jsonl").write_text("\n")
    with pytest.raises(UserError, match="metrics.jsonl: metrics file is empty"):
        read_metrics(tmp_path / "metrics.jsonl")

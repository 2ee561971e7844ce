"""The Tracker the loop talks to: files, console views, completions cadence, health, close."""

from __future__ import annotations

import json

from grpo_cli.config.schema import LoggerConfig, WandbConfig
from grpo_cli.tracking import Tracker, build_tracker, completion_columns, flatten_report
from grpo_cli.tracking.console import PlainView, QuietView, RichView, format_step_line, make_view

METRICS = {"reward/mean": 0.5, "accuracy": 0.25, "kl": 0.0012, "completion_len/mean": 181.6,
           "tokens_per_s": 1234.4, "mem/peak_gb": 12.34, "loss": float("nan")}


def _cfg(console: str = "plain", every: int = 10, **kw) -> LoggerConfig:
    return LoggerConfig(console=console, completions_every=every,
                        wandb=WandbConfig(mode="disabled"), **kw)


def test_format_step_line() -> None:
    assert format_step_line(12, 100, METRICS) == (
        "step 12/100 | reward 0.500 | acc 0.250 | kl 0.0012 | len 182 | tok/s 1234 | mem 12.3GB")
    assert format_step_line(1, 2, {"kl": float("nan")}) == "step 1/2 | kl nan"


def test_views_by_config_and_tty() -> None:
    assert type(make_view("rich", is_tty=True)) is RichView
    assert type(make_view("rich", is_tty=False)) is PlainView  # a log file gets no bars
    assert type(make_view("plain", is_tty=True)) is PlainView
    assert type(make_view("quiet", is_tty=True)) is QuietView


def test_plain_run_end_to_end(tmp_path, capsys) -> None:
    tracker = build_tracker(_cfg(), tmp_path, "r", {}, max_steps=3)
    for step in (1, 2, 3):
        with tracker.rollout_progress(8) as bar:
            bar.update(8)
        metrics = {**METRICS, "reward/mean": step / 10}
        if step == 3:  # the loop's eval step: its numbers go into the step's one line
            metrics.update(tracker.log_eval(3, {"accuracy": {"strict": 0.5, "flexible": 0.625},
                                                "n": 8, "name": "x"}))
        tracker.log_step(step, metrics)
    tracker.log_samples(3, [{"prompt": "p", "completion": "c", "reward": 1.0, "advantage": 0.0}])
    paths = tracker.close(plot=True)
    out = capsys.readouterr().out
    assert "step 2/3 | reward 0.200" in out
    assert "eval step 3 | eval/accuracy/strict 0.5 | eval/accuracy/flexible 0.625 | eval/n 8" in out
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]  # one line per step, eval steps too
    assert rows[0]["loss"] is None and rows[2]["reward/mean"] == 0.3
    assert {k: v for k, v in rows[2].items() if k.startswith("eval/")} == {
        "eval/accuracy/strict": 0.5, "eval/accuracy/flexible": 0.625, "eval/n": 8}
    assert (tmp_path / "samples" / "step-3.jsonl").is_file()
    assert {p.name for p in paths} >= {"reward.png", "accuracy.png", "kl.png"}


def test_quiet_prints_nothing_but_warnings(tmp_path, capsys) -> None:
    tracker = build_tracker(_cfg("quiet"), tmp_path, "r", {}, max_steps=2)
    tracker.log_step(1, METRICS)
    tracker.warn("something odd")
    tracker.close(plot=False)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "warning: something odd" in captured.err
    assert "step 1: something odd" in (tmp_path / "warnings.log").read_text()
    assert not (tmp_path / "plots").exists()


def test_rich_view_runs_without_a_terminal(tmp_path) -> None:
    tracker = build_tracker(_cfg("rich"), tmp_path, "r", {}, max_steps=2, is_tty=True)
    with tracker.rollout_progress(4) as bar:
        bar.update(2)
        bar.update(2)
    tracker.log_step(1, METRICS)
    tracker.warn("[not markup]")
    tracker.close(plot=False)


def test_health_warning_is_printed_and_logged(tmp_path, capsys) -> None:
    tracker = build_tracker(_cfg(), tmp_path, "r", {}, max_steps=40)
    for step in range(40):
        tracker.log_step(step, {"kl": 0.01 if step < 10 else 2.0})
    tracker.close(plot=False)
    assert capsys.readouterr().err.count("[health:kl_high]") == 1
    assert "[health:kl_high] step 11" in (tmp_path / "warnings.log").read_text()


class _RecordingBackend:
    def __init__(self) -> None:
        self.tables: list[tuple[str, list, int]] = []

    def add_table_rows(self, key, columns, rows, step) -> None:
        self.tables.append((key, columns, step, rows))

    def log(self, metrics, step) -> None:
        pass

    def finish(self) -> None:
        pass


def test_completions_table_cadence_and_columns(tmp_path) -> None:
    tracker = Tracker(QuietView(), tmp_path, max_steps=30, completions_every=10)
    tracker.backend = backend = _RecordingBackend()
    row = {"prompt": "p", "completion": "c", "reward": 1.5, "advantage": 0.5,
           "rewards/format": 0.5, "rewards/correctness": 1.0}
    for step in range(1, 31, 2):  # samples every 2 steps
        tracker.log_samples(step, [row])
    steps = [step for key, _, step, _ in backend.tables if key == "completions"]
    assert steps == [1, 11, 21]  # the first call, then at most once every 10 steps
    _, columns, _, rows = backend.tables[0]
    assert columns == ["step", "prompt", "completion", "rewards/correctness", "rewards/format",
                       "reward", "advantage"]
    assert rows == [[1, "p", "c", 1.0, 0.5, 1.5, 0.5]]
    assert len(list((tmp_path / "samples").glob("step-*.jsonl"))) == 15


def test_the_table_follows_completions_every_alone(tmp_path) -> None:
    # completions_every=1 with sample files only every 5 steps: table rows every step.
    tracker = Tracker(QuietView(), tmp_path, max_steps=6, completions_every=1)
    tracker.backend = backend = _RecordingBackend()
    row = {"prompt": "p", "completion": "c", "reward": 1.0, "advantage": 0.0}
    for step in range(1, 7):
        tracker.log_samples(step, [row], write_file=step % 5 == 0 or step == 1)
    assert [step for key, _, step, _ in backend.tables if key == "completions"] == [1, 2, 3, 4,
                                                                                   5, 6]
    assert sorted(p.name for p in (tmp_path / "samples").glob("*.jsonl")) == [
        "step-1.jsonl", "step-5.jsonl"]


def test_helpers() -> None:
    assert completion_columns([{"rewards/b": 1, "rewards/a": 0}]) == [
        "step", "prompt", "completion", "rewards/a", "rewards/b", "reward", "advantage"]
    assert flatten_report({"eval/accuracy": 0.5, "ok": True}) == {"eval/accuracy": 0.5}


def test_context_manager_closes_without_plots_on_error(tmp_path) -> None:
    try:
        with build_tracker(_cfg("quiet"), tmp_path, "r", {}, max_steps=1) as tracker:
            tracker.log_step(1, METRICS)
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert tracker._closed and not (tmp_path / "plots").exists()

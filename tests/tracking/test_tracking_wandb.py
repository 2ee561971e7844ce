"""W&B backend: an offline run read back from its .wandb file, failures that must not stop
training, and the `auto` mode resolution. No network: offline mode, W&B dirs under tmp."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

from grpo_cli.config.schema import LoggerConfig, WandbConfig
from grpo_cli.tracking import build_tracker
from grpo_cli.tracking.wandb_logger import is_logged_in, resolve_mode

wandb = pytest.importorskip("wandb")

BLOCK = 32768  # the .wandb file is a LevelDB-style log: 32 KiB blocks of framed records
HEADER = 7  # file header ':W&B' + magic + version; record header crc32(4) + length(2) + type(1)


def read_wandb_records(path: Path) -> list:
    """Every Record protobuf of a .wandb transaction log (FULL/FIRST/MIDDLE/LAST framing)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def read_finished_records(path: Path, patience_s: float = 60.0) -> list:
    """The records of a run's log once its exit record is there: W&B's service process writes
    the file on its own time, and on a loaded machine it can still be writing after finish()."""
    deadline = time.monotonic() + patience_s
    while True:
        records = read_wandb_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        if time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def history_rows(records: list) -> list[dict]:
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """Keep every W&B file under tmp_path and make sure nothing goes online."""
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / var.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    return tmp_path


def _cfg(mode: str = "offline", every: int = 2) -> LoggerConfig:
    return LoggerConfig(console="quiet", completions_every=every, health_checks=False,
                        plot_at_end=False, wandb=WandbConfig(mode=mode, project="test"))


def _step_metrics(step: int) -> dict:
    return {"reward/mean": 0.1 * step, "reward/std": 0.5, "rewards/correctness/mean": 0.05 * step,
            "accuracy": 0.05 * step, "kl": 0.001 * step, "loss": float("nan")}


def _rows(step: int) -> list[dict]:
    return [{"prompt": f"q{step}-{i}", "completion": f"a{i}", "reward": float(i),
             "advantage": i - 0.5, "rewards/correctness": float(i), "rewards/format": 0.5}
            for i in range(2)]


def _config_updates(record) -> list:
    kind = record.WhichOneof("record_type")
    if kind == "run":
        return list(record.run.config.update)
    if kind == "config":
        return list(record.config.update)
    return []


def test_offline_run_holds_history_and_growing_completions_table(wandb_env) -> None:
    run_dir = wandb_env / "run"
    tracker = build_tracker(_cfg(), run_dir, "unit-run", {"algo": {"beta": 0.04}}, max_steps=4)
    for step in range(1, 5):
        metrics = _step_metrics(step)
        if step == 4:
            metrics.update(tracker.log_eval(4, {"accuracy": 0.75}))
        tracker.log_step(step, metrics)
        tracker.log_samples(step, _rows(step))
    tracker.close(plot=False)

    files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, "offline run files go under <run_dir>/wandb"
    records = read_finished_records(files[0])
    # The config reaches the file with the run record, or (when the service is slow to
    # start) in a config record of its own.
    config = {item.key: json.loads(item.value_json) for r in records
              for item in _config_updates(r)}
    assert config["algo"] == {"beta": 0.04}
    rows = {row["_step"]: row for row in history_rows(records)}
    assert [rows[s]["reward/mean"] for s in range(1, 5)] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert rows[3]["rewards/correctness/mean"] == pytest.approx(0.15)
    assert rows[4]["eval/accuracy"] == 0.75
    # completions_every=2: the table is logged at steps 1 and 3 and grows (2 then 4 rows).
    tables = {s: r for s, r in rows.items() if "completions/_type" in r}
    assert sorted(tables) == [1, 3]
    assert tables[1]["completions/_type"] == "incremental-table-file"
    assert [tables[s]["completions/nrows"] for s in (1, 3)] == [2, 4]
    table_json = json.loads((files[0].parent / "files" / tables[3]["completions/path"]).read_text())
    assert table_json["columns"] == ["step", "prompt", "completion", "rewards/correctness",
                                     "rewards/format", "reward", "advantage"]
    assert table_json["data"][0][:3] == [3, "q3-0", "a0"]


def test_init_failure_does_not_stop_training(wandb_env, monkeypatch) -> None:
    def broken_init(**_: object) -> None:
        raise RuntimeError("network unreachable")

    monkeypatch.setattr(wandb, "init", broken_init)
    run_dir = wandb_env / "run"
    tracker = build_tracker(_cfg("online"), run_dir, "r", {}, max_steps=3)
    for step in range(1, 4):
        tracker.log_step(step, _step_metrics(step))
        tracker.log_samples(step, _rows(step))
    tracker.close(plot=False)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    warnings = (run_dir / "warnings.log").read_text()
    assert "W&B init failed" in warnings and "network unreachable" in warnings


class _FailingRun:
    """A run whose log raises, as when the W&B service dies mid-run."""

    id, dir, url = "abc", None, None

    def __init__(self) -> None:
        self.log_calls = 0

    def log(self, *_: object, **__: object) -> None:
        self.log_calls += 1
        raise ConnectionError("wandb-core went away")

    def finish(self) -> None:
        pass


def test_log_failure_warns_once_and_switches_off(wandb_env, monkeypatch, capsys) -> None:
    run = _FailingRun()
    monkeypatch.setattr(wandb, "init", lambda **_: run)
    run_dir = wandb_env / "run"
    tracker = build_tracker(_cfg("online"), run_dir, "r", {}, max_steps=5)
    for step in range(1, 6):
        tracker.log_step(step, _step_metrics(step))
    tracker.close(plot=False)
    assert run.log_calls == 1, "after the first failure W&B is not called again"
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 5
    err = capsys.readouterr().err
    assert err.count("W&B log failed") == 1 and "wandb-core went away" in err


def test_disabled_mode_never_imports_a_run(wandb_env, monkeypatch) -> None:
    monkeypatch.setattr(wandb, "init", lambda **_: pytest.fail("init called while disabled"))
    tracker = build_tracker(_cfg("disabled"), wandb_env / "run", "r", {}, max_steps=1)
    tracker.log_step(1, _step_metrics(1))
    tracker.close(plot=False)
    assert not (wandb_env / "run" / "wandb").exists()


def test_auto_mode_follows_login(wandb_env, monkeypatch) -> None:
    assert not is_logged_in()
    assert resolve_mode("auto") == "offline"
    netrc_file = wandb_env / "netrc"
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    netrc_file.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc_file))
    assert resolve_mode("auto") == "online"
    monkeypatch.setenv("NETRC", str(wandb_env / "no_netrc"))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"
    assert resolve_mode("disabled") == "disabled"

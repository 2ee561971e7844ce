"""Faults around checkpoints, through the real CLI: a kill inside a save, SIGTERM, a full
disk, and resuming with a changed config.

The module fixture runs in two rounds (two processes at a time): first the runs that make
checkpoints, then the runs that resume from them; each test checks one part.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from reliability_cli import (
    assert_one_error_line,
    base_args,
    grpo_many,
    last_line,
    metrics,
    run_env,
)
from tiny_run import signal_after_first_step

from grpo_cli.trainer.checkpoint import find_latest

REFUSED = ("algo.num_generations", "model.lora.r", "model.name_or_path")


def _names(ckpt_root: Path) -> list[str]:
    return sorted(p.name for p in ckpt_root.iterdir())


def _files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def runs(tiny_llama_path, tiny_qwen2_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoint_faults")
    model = tiny_llama_path
    kill = base_args(model, root / "kill", 3, "trainer.save_every=1", "trainer.keep_last=3")
    disk = base_args(model, root / "disk", 3, "trainer.save_every=1", "trainer.keep_last=5")
    first = grpo_many([kill, disk, base_args(model, root / "base", 1)],
                      faults=["kill_in_checkpoint:2",
                              "enospc_checkpoint:2,enospc_checkpoint:3:0", None])
    r = SimpleNamespace(root=root, kill=first[0], disk=first[1], base=first[2])
    assert r.base.returncode == 0, r.base.stderr[-3000:]
    r.after_kill = (_names(root / "kill" / "checkpoints"), find_latest(root / "kill"))
    for copy in ("refused", "harmless"):
        shutil.copytree(root / "base", root / copy)
    r.refused_before = _files(root / "refused")

    changes = ["algo.num_generations=2", "model.lora.r=8", f"model.name_or_path={tiny_qwen2_path}"]
    second = grpo_many(
        [[*kill, "trainer.resume=auto"]]
        + [base_args(model, root / "refused", 2, change, "trainer.resume=auto")
           for change in changes]
        + [base_args(model, root / "harmless", 2, "trainer.resume=auto",
                     "logger.console=quiet", "trainer.log_every=5")])
    r.kill_resume, r.refused, r.harmless = second[0], second[1:4], second[4]
    return r


def test_kill_inside_a_checkpoint_keeps_the_previous_one_and_resume_continues(runs):
    root = runs.root / "kill" / "checkpoints"
    assert runs.kill.returncode == -signal.SIGKILL, runs.kill.stderr[-3000:]
    names, latest = runs.after_kill
    assert "step-1" in names and "step-2" not in names, names
    assert [n for n in names if n.startswith(".tmp-step-2-")], names  # the half-done save
    assert latest == root / "step-1"

    res = runs.kill_resume
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resumed from {root / 'step-1'} at step 1" in res.stdout + res.stderr
    assert [r["step"] for r in metrics(runs.root / "kill")] == [1, 2, 3]
    assert _names(root) == ["final", "step-1", "step-2", "step-3"]  # the .tmp-* is gone


def test_disk_full_keeps_the_previous_checkpoint(runs):
    """A failed periodic save warns and training goes on; a failed final save is one error
    line (exit 2); no half-written checkpoint is left for resume to pick up."""
    res, out = runs.disk, runs.root / "disk"
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    warnings = [line for line in res.stderr.splitlines() if "training goes on" in line]
    assert len(warnings) == 2 and "No space left on device" in warnings[0], res.stderr[-3000:]
    err = last_line(res.stderr)
    assert err.startswith("error: could not write checkpoint final at step 3"), err
    assert "step-1" in err and "trainer.resume=auto" in err, err
    assert [r["step"] for r in metrics(out)] == [1, 2, 3]  # training went on after step 2
    assert _names(out / "checkpoints") == ["step-1"]  # no .tmp-* left behind
    assert find_latest(out) == out / "checkpoints" / "step-1"


def test_resume_refuses_a_config_that_would_corrupt_the_run(runs):
    for key, res in zip(REFUSED, runs.refused):
        assert_one_error_line(res, "cannot resume from", key)
    assert _files(runs.root / "refused") == runs.refused_before  # nothing written or lost


def test_resume_allows_harmless_changes(runs):
    res = runs.harmless
    assert res.returncode == 0, res.stderr[-3000:]
    assert [r["step"] for r in metrics(runs.root / "harmless")] == [1, 2]


def test_sigterm_saves_a_checkpoint_and_prints_the_resume_hint(tiny_llama_path, tmp_path):
    out = tmp_path / "run"
    res = signal_after_first_step(base_args(tiny_llama_path, out, 500), out, run_env(),
                                  signal.SIGTERM, wait_s=120)
    err = res.stderr
    assert res.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert "trainer.resume=auto" in err
    ckpts = list((out / "checkpoints").iterdir())
    assert len(ckpts) == 1 and ckpts[0].name.startswith("step-"), ckpts
    step = json.loads((ckpts[0] / "meta.json").read_text())["step"]
    assert step == metrics(out)[-1]["step"]
    assert find_latest(out) == ckpts[0]

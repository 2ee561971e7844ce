"""Faults inside a training step, through the real CLI: NaN losses and out-of-memory errors
(injected through the trainer hooks, see tests/support/fault_hooks.py).

The module fixture starts every run (two at a time); each test checks one of them.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from reliability_cli import base_args, grpo_many, last_line, metrics
from safetensors.torch import load_file

RUNS = {  # name -> (GRPO_FAULT, extra overrides)
    "plain": (None, []),
    "nan": ("nan_loss:2", ["trainer.max_steps=4", "trainer.save_every=1", "trainer.keep_last=5",
                           "trainer.max_bad_steps=2"]),
    "oom_backward": ("oom_backward:1", []),
    "oom_rollout": ("oom_rollout:1", []),
    "oom_never_fits": ("oom_backward:1:0", ["trainer.max_steps=1"]),
}


@pytest.fixture(scope="module")
def runs(tiny_llama_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("step_faults")
    results = grpo_many([base_args(tiny_llama_path, root / name, 2, "optim.lr=1e-2", *extra)
                         for name, (_, extra) in RUNS.items()],
                        faults=[fault for fault, _ in RUNS.values()])
    return {name: SimpleNamespace(res=res, out=root / name)
            for name, res in zip(RUNS, results)}


def _state(ckpt) -> tuple[dict, dict]:
    adapter = load_file(str(ckpt / "policy" / "adapter_model.safetensors"))
    return adapter, torch.load(ckpt / "trainer_state.pt", weights_only=False)


def _ok(run) -> None:
    assert run.res.returncode == 0, run.res.stderr[-3000:]
    assert "Traceback" not in run.res.stderr


def test_nan_steps_are_skipped_counted_and_stop_the_run(runs):
    res, out = runs["nan"].res, runs["nan"].out
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    err = last_line(res.stderr)
    assert err.startswith("error: stopped at step 3: 2 steps in a row had a non-finite loss"), err
    assert "weights of step 1, before the trouble" in err, err
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["health/skipped_steps"] for r in rows] == [0, 1, 2]
    assert rows[0]["loss"] is not None and rows[1]["loss"] is None  # NaN is written as null

    good, stop = out / "checkpoints" / "step-1", out / "checkpoints" / "step-3"
    meta = json.loads((stop / "meta.json").read_text())
    assert meta["step"] == 3 and meta["last_good_step"] == 1
    (w1, s1), (w3, s3) = _state(good), _state(stop)
    assert w1.keys() == w3.keys()
    for key in w1:
        assert torch.equal(w1[key], w3[key]), key  # the weights of step 1
    opt1, opt3 = s1["optimizer"]["state"], s3["optimizer"]["state"]
    assert opt1.keys() == opt3.keys() and opt1
    for i in opt1:  # skipped steps did not touch the Adam moments or the step count
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(torch.as_tensor(opt1[i][name]), torch.as_tensor(opt3[i][name]))


def test_oom_in_backward_halves_the_micro_batch_and_retries_the_step(runs):
    plain, oom = runs["plain"], runs["oom_backward"]
    _ok(plain)
    _ok(oom)
    assert ("out of memory in the backward pass at micro-batch 4; retrying with "
            "trainer.micro_batch_size=2") in oom.res.stderr
    a, b = metrics(plain.out), metrics(oom.out)
    assert [r["health/oom_retries"] for r in b] == [1, 1]
    # Same prompts, same gradient: nothing was accumulated twice, no prompt was skipped.
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        for key in ("reward/mean", "loss", "grad_norm", "completion_len/mean"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-6), (ra["step"], key)
    for run in (plain, oom):
        state = torch.load(run.out / "checkpoints/final/trainer_state.pt", weights_only=False)
        assert state["data_position"] == 4  # 2 steps x 2 prompts


def test_oom_in_rollout_halves_the_batch_and_takes_no_new_prompts(runs):
    plain, oom = runs["plain"], runs["oom_rollout"]
    _ok(oom)
    assert ("out of memory in the rollout at 8 sequences; retrying with rollout.batch_size=4"
            in oom.res.stderr)
    assert [r["health/oom_retries"] for r in metrics(oom.out)] == [1, 1]

    def prompts(run) -> list[str]:
        rows = [json.loads(line) for line in (run.out / "samples" / "step-1.jsonl").open()]
        return sorted({r["prompt"] for r in rows if "prompt" in r})  # once per group

    assert prompts(oom) == prompts(plain)
    state = torch.load(oom.out / "checkpoints/final/trainer_state.pt", weights_only=False)
    assert state["data_position"] == 4


def test_oom_that_does_not_fit_at_micro_batch_one_is_one_clear_error(runs):
    res = runs["oom_never_fits"].res
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    err = last_line(res.stderr)
    assert err.startswith("error: out of memory in the backward pass at step 1 even at "
                          "trainer.micro_batch_size=1"), err
    assert "grpo plan" in err, err
    retries = [line for line in res.stderr.splitlines() if "retrying with" in line]
    assert len(retries) == 2, retries  # 4 -> 2 -> 1, then the error

"""The fault hooks and the recovery code they exercise, in-process (no training run)."""

from __future__ import annotations

import errno
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from grpo_cli.errors import UserError
from grpo_cli.trainer import faults
from grpo_cli.trainer.checkpoint import (
    find_latest,
    is_checkpoint,
    recover_interrupted,
    save_checkpoint,
)
from grpo_cli.trainer.step import _halve_micro_batch, _halve_rollout_batch, _retry_on_oom


@pytest.fixture
def fault_env(monkeypatch):
    def set_fault(text: str) -> None:
        monkeypatch.setenv(faults.ENV, text)
        faults.reset()
    yield set_fault
    faults.reset()


def test_fault_spec_counts_and_steps(fault_env):
    fault_env("oom_backward:2:2, nan_loss:3")
    assert not faults.fires("oom_backward", 1)
    assert [faults.fires("oom_backward", 2) for _ in range(3)] == [True, True, False]
    assert [faults.fires("nan_loss", s) for s in (2, 3, 4, 4)] == [False, True, True, True]
    fault_env("oom_rollout:1:0")
    assert all(faults.fires("oom_rollout", 1) for _ in range(5))
    fault_env("")
    assert not faults.fires("nan_loss", 10)
    fault_env("explode:1")
    with pytest.raises(ValueError, match="kind:step"):
        faults.fires("nan_loss", 1)


def test_oom_is_recognised():
    assert faults.is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert faults.is_oom(RuntimeError("CUDA error: out of memory"))
    assert not faults.is_oom(RuntimeError("shape mismatch"))
    assert not faults.is_oom(ValueError("out of memory"))


def _save(root, name, step, value=1.0):
    def policy(folder):
        folder.mkdir(parents=True)
        (folder / "weights.txt").write_text(str(value))
    return save_checkpoint(root, name, save_policy_fn=policy, trainer_state={"step": step},
                           config=OmegaConf.create({"a": 1}), step=step)


def test_a_failed_save_leaves_the_previous_checkpoint_and_no_temp_folder(fault_env, tmp_path):
    root = tmp_path / "checkpoints"
    _save(root, "final", 1, value=1.0)
    fault_env("enospc_checkpoint:2")
    with pytest.raises(OSError) as err:
        _save(root, "final", 2, value=2.0)
    assert err.value.errno == errno.ENOSPC
    assert sorted(p.name for p in root.iterdir()) == ["final"]
    assert (root / "final" / "policy" / "weights.txt").read_text() == "1.0"
    assert find_latest(tmp_path) == root / "final"


def test_a_final_moved_aside_by_a_killed_save_is_put_back(tmp_path):
    root = tmp_path / "checkpoints"
    _save(root, "final", 3)
    (root / "final").rename(root / ".tmp-old-final-4242")  # killed between the two renames
    assert find_latest(tmp_path) is None
    recover_interrupted(root)
    assert is_checkpoint(root / "final") and find_latest(tmp_path) == root / "final"


def _engine(mbs=4, rollout=None):
    param = torch.nn.Parameter(torch.ones(2))
    param.grad = torch.ones(2)
    warnings = []
    cfg = SimpleNamespace(algo=SimpleNamespace(num_generations=4),
                          trainer=SimpleNamespace(prompts_per_step=4))
    return SimpleNamespace(cfg=cfg, step=7, micro_batch_size=mbs, rollout_batch_size=rollout,
                           oom_retries=0, optimizer=torch.optim.AdamW([param]),
                           tracker=SimpleNamespace(warn=warnings.append),
                           warnings=warnings, param=param)


def test_retry_halves_the_micro_batch_and_drops_partial_gradients():
    engine = _engine(mbs=4)
    seen = []

    def work():
        seen.append(engine.micro_batch_size)
        assert engine.param.grad is None or len(seen) == 1  # grads dropped before a retry
        if engine.micro_batch_size > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return "done"

    assert _retry_on_oom(engine, "backward pass", work, _halve_micro_batch) == "done"
    assert seen == [4, 2, 1] and engine.oom_retries == 2
    assert "retrying with trainer.micro_batch_size=2" in engine.warnings[0]


def test_retry_gives_up_at_micro_batch_one_with_plan_advice():
    engine = _engine(mbs=1)

    def work():
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(UserError, match="micro_batch_size=1.*grpo plan"):
        _retry_on_oom(engine, "backward pass", work, _halve_micro_batch)


def test_retry_halves_the_rollout_batch_down_to_one_group():
    engine = _engine(rollout=None)  # the whole step: 4 prompts x G=4 = 16 sequences
    sizes = []

    def work():
        sizes.append(engine.rollout_batch_size)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(UserError, match="one group of algo.num_generations=4"):
        _retry_on_oom(engine, "rollout", work, _halve_rollout_batch)
    assert sizes == [None, 8, 4]


def test_other_errors_are_not_retried():
    engine = _engine()

    def work():
        raise RuntimeError("index out of range")

    with pytest.raises(RuntimeError, match="index out of range"):
        _retry_on_oom(engine, "backward pass", work, _halve_micro_batch)
    assert engine.oom_retries == 0

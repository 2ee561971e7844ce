"""The fault hooks (tests/support/fault_hooks.py) and the checkpoint code they exercise,
in-process (no training run)."""

from __future__ import annotations

import errno

import pytest
from fault_hooks import FaultHooks
from omegaconf import OmegaConf

from grpo_cli.trainer.checkpoint import (
    find_latest,
    is_checkpoint,
    recover_interrupted,
    save_checkpoint,
)
from grpo_cli.trainer.hooks import NO_HOOKS


def test_fault_spec_counts_and_steps():
    hooks = FaultHooks("oom_backward:2:2, nan_loss:3")
    assert not hooks.fires("oom_backward", 1)
    assert [hooks.fires("oom_backward", 2) for _ in range(3)] == [True, True, False]
    assert [hooks.fires("nan_loss", s) for s in (2, 3, 4, 4)] == [False, True, True, True]
    hooks = FaultHooks("oom_rollout:1:0")
    assert all(hooks.fires("oom_rollout", 1) for _ in range(5))
    hooks = FaultHooks("")
    assert not hooks.fires("nan_loss", 10)
    with pytest.raises(ValueError, match="kind:step"):
        FaultHooks("explode:1")


def _save(root, name, step, value=1.0, hooks=NO_HOOKS):
    def policy(folder):
        folder.mkdir(parents=True)
        (folder / "weights.txt").write_text(str(value))
    return save_checkpoint(root, name, save_policy_fn=policy, trainer_state={"step": step},
                           config=OmegaConf.create({"a": 1}), step=step, hooks=hooks)


def test_a_failed_save_leaves_the_previous_checkpoint_and_no_temp_folder(tmp_path):
    root = tmp_path / "checkpoints"
    _save(root, "final", 1, value=1.0)
    with pytest.raises(OSError) as err:
        _save(root, "final", 2, value=2.0, hooks=FaultHooks("enospc_checkpoint:2"))
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

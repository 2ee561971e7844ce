"""The build phase of `grpo train`, in-process and without a model: the data is read before
the model loads, and the keys a resume must keep come from the schema."""

from __future__ import annotations

from pathlib import Path

import in_process
import pytest

from grpo_cli.config.compose import compose_config
from grpo_cli.config.schema import resume_fixed_keys
from grpo_cli.errors import UserError
from grpo_cli.trainer.train import check_resume_compatible


def test_bad_data_fails_before_the_model_loads(tmp_path, capsys):
    # The model path does not exist either: the error names the data, so it came first.
    res = in_process.grpo(capsys, "train", f"trainer.output_dir={tmp_path / 'run'}",
                          "logger.wandb.mode=disabled", "data=jsonl",
                          f"data.path={tmp_path / 'missing.jsonl'}",
                          f"model.name_or_path={tmp_path / 'no-such-model'}")
    assert res.returncode == 2, res.stderr
    assert "missing.jsonl" in res.stderr and "no-such-model" not in res.stderr, res.stderr
    assert not (tmp_path / "run").exists()


def test_resume_fixed_keys_are_marked_in_the_schema():
    assert sorted(resume_fixed_keys()) == sorted([
        "model.name_or_path", "model.gguf_file", "model.quantization", "model.lora.enabled",
        "model.lora.r", "model.lora.alpha", "model.lora.target_modules",
        "model.lora.use_rslora", "algo.num_generations", "data.name", "optim.name"])
    saved, _ = compose_config("train", [])
    changed, _ = compose_config("train", ["model.lora.r=8", "optim.lr=1e-3"])
    path = Path("outputs/run/checkpoints/step-2")
    with pytest.raises(UserError) as err:
        check_resume_compatible(saved, changed, path)
    assert str(err.value) == (f"cannot resume from {path}: model.lora.r was 16 and is now 8; "
                              "start a new run (another trainer.output_dir) or set it back")
    harmless, _ = compose_config("train", ["optim.lr=1e-3"])
    check_resume_compatible(saved, harmless, path)

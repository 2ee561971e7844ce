"""Bad input through the CLI: one `error:` line on stderr, exit code 2, nothing written.

Every case runs `grpo train` in this process (`in_process.grpo`: the same `main`, milliseconds
instead of seconds of imports per case); one case also runs in a real `grpo train`
subprocess, which must print the same line.
"""

from __future__ import annotations

import json
from pathlib import Path

import in_process
import pytest
from reliability_cli import assert_one_error_line, base_args, grpo
from tiny import make_tiny_model


def _no_eos_model(root: Path) -> Path:
    """A tiny model whose tokenizer has neither a pad nor an EOS token."""
    path = make_tiny_model(root / "no_eos_model", with_pad=False)
    cfg_file = path / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["eos_token"] = None
    cfg["pad_token"] = None
    cfg_file.write_text(json.dumps(cfg))
    return path


def _cases(root: Path, model: Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    """name -> (extra overrides, substrings the error line must hold)."""
    malformed = root / "malformed.jsonl"
    malformed.write_text('{"question": "1+1?", "answer": "2"}\n'
                         '{"question": "2+2?", "answer": "4"}\n'
                         '{"question": "3+3?", "answer": \n')
    not_a_ckpt = root / "not_a_checkpoint"
    not_a_ckpt.mkdir()
    (not_a_ckpt / "notes.txt").write_text("hello")
    a_file = root / "a_file"
    a_file.write_text("x")
    return {
        "missing_dataset": (["data=jsonl", f"data.path={root / 'missing.jsonl'}"],
                            ("missing.jsonl", "no such file")),
        "malformed_dataset": (["data=jsonl", f"data.path={malformed}"],
                              ("malformed.jsonl:3", "malformed JSON")),
        "no_usable_rows": (["data.max_prompt_tokens=8"], ("0 train rows", "max_prompt_tokens")),
        "unknown_recipe": (["+recipe=no_such_recipe"], ("unknown recipe 'no_such_recipe'",)),
        "model_path_missing": ([f"model.name_or_path={root / 'no-such-model'}"],
                               ("no-such-model",)),
        "tokenizer_no_pad_no_eos": ([f"model.name_or_path={_no_eos_model(root)}"],
                                    ("no pad and no EOS",)),
        "reward_does_not_import": (["+reward.components.bad.fn=no_such_module_xyz:score"],
                                   ("reward.components.bad.fn", "cannot import")),
        "reward_wrong_signature": (["+reward.components.bad.fn=faulty_rewards:wrong_signature"],
                                   ("reward.components.bad.fn", "must accept")),
        "sandbox_bwrap_missing": (["+reward.components.code.fn=code_tests",
                                   "+reward.components.code.kwargs={sandbox: {isolation: bwrap, "
                                   f"bwrap: '{root / 'no-such-bwrap'}'}}}}"],
                                  ("sandbox bwrap", "no-such-bwrap", "not an executable")),
        "resume_not_a_checkpoint": ([f"trainer.resume={not_a_ckpt}"],
                                    ("trainer.resume", "not a checkpoint")),
        "output_dir_unwritable": ([f"trainer.output_dir={a_file / 'run'}"],
                                  ("trainer.output_dir", "not writable")),
    }


CASES = ["missing_dataset", "malformed_dataset", "no_usable_rows", "unknown_recipe",
         "model_path_missing", "tokenizer_no_pad_no_eos", "reward_does_not_import",
         "reward_wrong_signature", "sandbox_bwrap_missing", "resume_not_a_checkpoint",
         "output_dir_unwritable"]


@pytest.fixture(scope="module")
def cases(tiny_llama_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    found = _cases(root, tiny_llama_path)
    assert sorted(found) == sorted(CASES)
    return root, found


def _args(tiny_llama_path, cases, case: str) -> tuple[list[str], Path, tuple[str, ...]]:
    root, found = cases
    extra, needles = found[case]
    run_dir = root / f"run-{case}"
    # A later override wins, so each case's own overrides go after the working base config.
    return base_args(tiny_llama_path, run_dir, 1, *extra), run_dir, needles


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_writes_nothing(tiny_llama_path, cases, case, capsys):
    args, run_dir, needles = _args(tiny_llama_path, cases, case)
    res = in_process.grpo(capsys, "train", *args)
    assert_one_error_line(res, *needles)
    assert not run_dir.exists(), sorted(p.name for p in run_dir.iterdir())


def test_the_real_command_prints_the_same_line(tiny_llama_path, cases, capsys):
    """The subprocess says what main says. A case that fails before the model loads: set-up
    lines are held back only for 30 s (train.held_logs), which a model load in a subprocess
    on a loaded 2-core machine can pass."""
    args, run_dir, needles = _args(tiny_llama_path, cases, "malformed_dataset")
    res = grpo(*args)
    assert assert_one_error_line(res, *needles) == assert_one_error_line(
        in_process.grpo(capsys, "train", *args), *needles)
    assert not run_dir.exists(), sorted(p.name for p in run_dir.iterdir())

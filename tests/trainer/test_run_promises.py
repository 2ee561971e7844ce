"""Issue 15's promises that need no model: the run folder is never overwritten, the resume
hint is a runnable command, CPU threads, help texts, eval settings and what is logged."""

from __future__ import annotations

import json
import shlex
import sys
import warnings

import pytest
import torch

from grpo_cli import cli
from grpo_cli.config.compose import compose_config
from grpo_cli.config.schema import ConfigError, LoggerConfig, WandbConfig
from grpo_cli.errors import UserError
from grpo_cli.evaluation.compare import run_compare
from grpo_cli.evaluation.runner import check_out_dir, default_out_dir
from grpo_cli.plan import run_plan
from grpo_cli.tracking import build_tracker
from grpo_cli.tracking.health import HealthThresholds
from grpo_cli.trainer import threads
from grpo_cli.trainer.reporting import reward_template_problems
from grpo_cli.trainer.run_dir import check_run_dir, resume_command


def test_a_folder_with_a_run_is_refused_without_resume(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(UserError, match="trainer.resume=auto, or start a new run with "
                                        "trainer.run_name=NAME"):
        check_run_dir(tmp_path, None, has_checkpoint=False)
    with pytest.raises(UserError, match="no checkpoint to resume from"):
        check_run_dir(tmp_path, "auto", has_checkpoint=False)
    check_run_dir(tmp_path, "auto", has_checkpoint=True)  # resuming is what the folder is for
    check_run_dir(tmp_path / "new", None, has_checkpoint=False)


def test_grpo_train_twice_in_one_folder_keeps_the_first_run(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "reward/mean": 0.5}\n')
    code = cli.main(["train", f"trainer.output_dir={run}", "logger.wandb.mode=disabled"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "trainer.resume=auto" in err, err
    assert (run / "metrics.jsonl").read_text() == '{"step": 1, "reward/mean": 0.5}\n'


def test_resume_command_is_the_invocation_quoted_with_one_resume(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["/somewhere/grpo_cli/cli.py"])
    hint = resume_command(["algo.beta=0.0", "data.system_prompt=Be brief.",
                           "trainer.resume=auto"])
    assert "  " not in hint
    assert shlex.split(hint) == [sys.executable, "-m", "grpo_cli.cli", "train", "algo.beta=0.0",
                                 "data.system_prompt=Be brief.", "trainer.resume=auto"]
    script = tmp_path / "bin" / "grpo"  # a console script that is not on PATH
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "argv", [str(script)])
    monkeypatch.setenv("PATH", "/nonexistent")
    assert shlex.split(resume_command([]))[0] == str(script.resolve())
    monkeypatch.setenv("PATH", str(script.parent))
    script.chmod(0o755)
    assert resume_command(["trainer.resume=outputs/x/checkpoints/step-2"]) == (
        "grpo train trainer.resume=auto")


def test_cpu_threads_auto_explicit_and_from_the_environment(monkeypatch):
    assert threads.auto_threads(2, 1.7) == 1  # one core busy elsewhere: one thread
    assert threads.auto_threads(2, 0.2) == 2
    assert threads.auto_threads(16, 30.0) == 1
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert threads.set_cpu_threads(1, "cpu") == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
        monkeypatch.setattr(threads, "usable_cores", lambda: 3)
        assert threads.set_cpu_threads(None, "cpu") == 3
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert threads.choose_threads(None, True)[1] == "from OMP_NUM_THREADS"
    finally:
        torch.set_num_threads(before)


def test_each_command_has_its_own_help(capsys):
    assert cli.main(["eval", "--help"]) == 0
    text = capsys.readouterr().out
    for key in ("checkpoint=", "compare=", "eval.max_new_tokens=512", "eval.overwrite=false",
                "eval.completions="):
        assert key in text
    assert cli.main(["plan", "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: grpo plan") and "memory plan" not in text
    assert "config groups" in text and "+recipe" in text and "gpu=NAME" in text  # like train's
    assert cli.main(["train", "--help"]) == 0
    assert "trainer.cpu_threads=null" in capsys.readouterr().out
    assert cli.main(["export", "--help"]) == 0
    assert "dtype=fp32" in capsys.readouterr().out


@pytest.mark.parametrize("form", ["hydra", "all"])
def test_cfg_forms_other_than_job_are_refused(form, capsys):
    assert cli.main(["train", "--cfg", form]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--cfg {form} is not supported" in err


def test_eval_generation_settings_come_from_the_eval_config():
    _, cfg = compose_config("eval", [], for_training=False)
    assert cfg.eval.max_new_tokens == 512  # not the rollout's (a training run's) value
    with pytest.raises(ConfigError, match="rollout.max_new_tokens is read only by `grpo train`"):
        compose_config("eval", ["rollout.max_new_tokens=32"], for_training=False)
    _, cfg = compose_config("eval", ["eval.completions=their.jsonl"], for_training=False)
    assert str(default_out_dir(cfg)) == "outputs/eval/their/gsm8k"  # not the model's folder


def test_an_existing_report_is_not_overwritten(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps({"model": "m", "date": "d"}))
    with pytest.raises(UserError, match=r"already holds a report \(m, d\).*eval.overwrite=true"):
        check_out_dir(tmp_path, overwrite=False)
    check_out_dir(tmp_path, overwrite=True)
    check_out_dir(tmp_path / "empty", overwrite=False)


def _report(folder, **config):
    folder.mkdir()
    report = {"dataset": "gsm8k", "accuracy": 0.5, "accuracy_strict": 0.4,
              "accuracy_flexible": 0.5, "num_samples": 1, "num_examples": 10,
              "config": {"max_new_tokens": 512, "greedy": True, "temperature": None,
                         "test_split": "test", "extraction_order": ["hash"], **config}}
    (folder / "report.json").write_text(json.dumps(report))
    return str(folder)


def test_compare_warns_when_the_eval_settings_differ(tmp_path):
    a = _report(tmp_path / "a")
    b = _report(tmp_path / "b", max_new_tokens=32)
    c = _report(tmp_path / "c", max_new_tokens=None)  # a completions file: unknown
    assert "different eval settings" not in run_compare([a, c])
    text = run_compare([a, b])
    assert "warning: the reports used different eval settings" in text
    assert "max_new_tokens A=512 B=32" in text


def test_plan_says_whether_merged_decoding_is_on():
    _, cfg = compose_config("train", ["+recipe=gsm8k_qwen7b"])
    assert "merged decoding on rtx4090: OFF (needs 12.15 GiB" in run_plan(cfg, "rtx4090")
    assert "merged decoding on h100: ON" in run_plan(cfg, "h100")


def test_a_tag_reward_under_the_hash_template_warns():
    _, cfg = compose_config("train", ["data=gsm8k", "reward=r1"])
    [problem] = reward_template_problems(cfg)
    assert "reward.components.tag_count (tag_count)" in problem and "data.template=r1" in problem
    _, cfg = compose_config("train", ["data=gsm8k", "reward=r1", "data.template=r1"])
    assert reward_template_problems(cfg) == []


def test_health_warnings_survive_a_resume(tmp_path):
    t = HealthThresholds(zero_std_steps=4)
    cfg = LoggerConfig(console="quiet", wandb=WandbConfig(mode="disabled"))
    row = {"reward/mean": 0.0, "frac_zero_std": 1.0}
    tracker = build_tracker(cfg, tmp_path, "r", {}, 8, health_thresholds=t)
    for step in (1, 2, 3):
        tracker.log_step(step, row)
    tracker.close(plot=False)
    resumed = build_tracker(cfg, tmp_path, "r", {}, 8, start_step=3, health_thresholds=t)
    resumed.log_step(4, row)  # the 4th stuck step: an unbroken run warns here
    resumed.close(plot=False)
    assert "step 4: [health:zero_std]" in (tmp_path / "warnings.log").read_text()


def test_transformers_cache_notice_is_silenced():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cli.setup_logging()
        warnings.warn("`past_key_values` is deprecated and will be removed", FutureWarning,
                      stacklevel=1)
    assert seen == []

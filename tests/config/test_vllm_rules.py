"""rollout.engine=vllm: the config keys and the bad inputs refused at compose time (one
`error:` line, exit 2, before any model loads). Runs in any venv: the not-installed line is
checked with the lookup patched, so it holds with and without vLLM."""

from __future__ import annotations

import in_process
import pytest
from tiny_run import assert_one_error_line

from grpo_cli.config import vllm_rules
from grpo_cli.config.compose import compose_config
from grpo_cli.config.schema import ConfigError, command_of


@pytest.fixture
def installed(monkeypatch):
    monkeypatch.setattr(vllm_rules, "vllm_installed", lambda: True)


def test_defaults_and_both_commands_read_the_keys():
    _, cfg = compose_config("train", [])
    assert cfg.rollout.engine == "hf"
    assert 0 < cfg.rollout.vllm.gpu_memory_utilization <= 0.5 and cfg.rollout.vllm.log is False
    for key in ("rollout.engine", "rollout.vllm", "rollout.vllm.gpu_memory_utilization"):
        assert command_of(key) == "both"


def test_engine_vllm_composes_for_train_and_eval(installed):
    assert compose_config("train", ["rollout.engine=vllm"])[1].rollout.engine == "vllm"
    _, ev = compose_config("eval", ["rollout.engine=vllm", "model.lora.enabled=false"],
                        for_training=False)
    assert ev.rollout.engine == "vllm"  # a base model may be evaluated with vLLM


def test_not_installed_names_the_install_commands(capsys, monkeypatch):
    monkeypatch.setattr(vllm_rules, "vllm_installed", lambda: False)
    for command in ("train", "eval"):
        out = in_process.grpo(capsys, command, "rollout.engine=vllm", "--cfg", "job")
        assert_one_error_line(out, "rollout.engine=vllm needs vLLM")
        assert 'pip install -e ".[vllm]"' in out.stderr and "install_vllm_cpu.sh" in out.stderr


@pytest.mark.parametrize("overrides,needle", [
    (["model.lora.r=1024"], "model.lora.r=1024 is above vLLM's largest LoRA rank (512)"),
    (["model.lora.enabled=false"], "rollout.engine=vllm trains LoRA adapters only"),
    (["model.quantization=int8"], "model.quantization=int8 is not supported with rollout.engine"),
    (["model.gguf_file=x.gguf"], "model.gguf_file is not supported with rollout.engine=vllm"),
    (["rollout.vllm.gpu_memory_utilization=0"], "rollout.vllm.gpu_memory_utilization=0"),
    (["rollout.engine=tgi"], "choose one of: hf, vllm"),
])
def test_bad_vllm_settings_are_one_line(overrides, needle, capsys, installed):
    out = in_process.grpo(capsys, "train", "rollout.engine=vllm", *overrides, "--cfg", "job")
    assert_one_error_line(out, needle)


def test_hf_engine_ignores_the_vllm_rules(monkeypatch):
    monkeypatch.setattr(vllm_rules, "vllm_installed", lambda: False)
    _, cfg = compose_config("train", ["model.lora.r=1024", "model.lora.enabled=false"])
    assert cfg.rollout.engine == "hf"


def test_max_lora_rank_is_the_smallest_size_that_holds_r():
    assert [vllm_rules.max_lora_rank(r) for r in (1, 2, 8, 12, 64, 300, 512)] == [
        1, 8, 8, 16, 64, 320, 512]
    with pytest.raises(ConfigError):
        compose_config("train", ["rollout.engine=vllm", "model.lora.r=513"])

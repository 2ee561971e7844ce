"""Every recipe and every config option composes; errors are one line with exit code 2."""

from __future__ import annotations

import importlib
import subprocess
import sys

import in_process
import pytest
from omegaconf import OmegaConf

from grpo_cli.config.compose import GROUPS, compose_config, group_options, recipe_dir
from grpo_cli.config.recipes import HEADER_KEYS, list_recipes
from grpo_cli.config.schema import ConfigError

RECIPES = sorted(p.stem for p in recipe_dir().glob("*.yaml"))


def grpo(*args: str) -> subprocess.CompletedProcess:
    """The real command, in a subprocess (most tests here call main in-process)."""
    return subprocess.run([sys.executable, "-m", "grpo_cli.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_the_required_recipes_exist():
    assert {"gsm8k_qwen7b", "math_qwen7b", "gsm8k_qwen1_5b", "quickstart"} <= set(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_composes_and_has_a_header(recipe):
    _, cfg = compose_config("train", [f"+recipe={recipe}"])
    assert cfg.trainer.max_steps >= 1
    header = list_recipes()[recipe]
    assert set(HEADER_KEYS) <= set(header), f"{recipe} header lacks some of {HEADER_KEYS}"


@pytest.mark.parametrize("group,option",
                         [(g, o) for g in GROUPS for o in group_options(g)])
def test_every_group_option_composes(group, option):
    extra = ["data.path=x.jsonl"] if (group, option) == ("data", "jsonl") else []
    dcfg, _ = compose_config("train", [f"{group}={option}", *extra])
    assert dcfg[group] is not None


def test_eval_config_composes():
    _, cfg = compose_config("eval", [], for_training=False)
    assert cfg.data.name == "gsm8k"


def test_default_is_the_quickstart():
    default, _ = compose_config("train", [])
    quick, _ = compose_config("train", ["+recipe=quickstart"])
    assert OmegaConf.to_container(default) == OmegaConf.to_container(quick)


def test_qwen7b_recipe_is_qlora():
    _, cfg = compose_config("train", ["+recipe=gsm8k_qwen7b"])
    assert cfg.model.name_or_path == "Qwen/Qwen2.5-7B-Instruct"
    assert cfg.model.quantization == "nf4" and cfg.model.double_quant
    assert cfg.model.compute_dtype == "bf16" and cfg.model.lora.enabled
    assert cfg.data.name == "gsm8k"


def test_every_target_imports():
    """Reward functions named in configs resolve (the configs' only import targets)."""
    from grpo_cli.rewards import REGISTRY

    for option in group_options("reward"):
        _, cfg = compose_config("train", [f"reward={option}"])
        for comp in cfg.reward.components.values():
            assert comp.fn in REGISTRY or importlib.import_module(comp.fn.split(":")[0])


def test_command_line_overrides_win():
    _, cfg = compose_config("train", ["+recipe=gsm8k_qwen7b", "algo.num_generations=4",
                                      "optim.lr=1e-6", "model.lora.r=32",
                                      "trainer.max_steps=200"])
    assert (cfg.algo.num_generations, cfg.optim.lr, cfg.model.lora.r,
            cfg.trainer.max_steps) == (4, 1e-6, 32, 200)
    assert cfg.trainer.output_dir == "outputs/gsm8k_qwen7b"


@pytest.mark.parametrize("override,needle", [
    ("algo.num_generatons=8", "did you mean algo.num_generations"),
    ("trainer.max_steps=abc", "trainer.max_steps"),
    ("algo.loss_agg=sum", "choose one of"),
    ("model.quantization=nf3", "model.quantization"),
    ("algo.epsilon_low=-0.1", "algo.epsilon_low"),
])
def test_bad_values_raise_config_error(override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        compose_config("train", [override])


def test_cfg_job_shows_override(capsys):
    out = in_process.grpo(capsys, "train", "+recipe=gsm8k_qwen7b", "algo.beta=0.1", "--cfg", "job")
    assert out.returncode == 0, out.stderr
    algo = OmegaConf.create(out.stdout).algo
    assert algo.beta == 0.1


@pytest.mark.parametrize("args,needle", [
    (["algo.num_generatons=8"], "unknown config key 'algo.num_generatons'"),
    (["trainer.max_steps=abc"], "trainer.max_steps"),
    (["algo.kl_target=0.1", "algo.beta=0"], "needs a starting algo.beta > 0"),
    (["model.lora.dropout=0.1"], "model.lora.dropout=0.1 is not supported by grpo train"),
    (["checkpoint=x"], "checkpoint is read only by `grpo eval`"),
    (["+recipe=no_such_recipe"], "unknown recipe 'no_such_recipe'"),
    (["model=no_such_model"], "unknown model option"),
])
def test_cli_errors_are_one_line_exit_2(args, needle, capsys):
    _assert_one_error_line(in_process.grpo(capsys, "train", *args, "--cfg", "job"), needle)


def test_the_real_command_gives_one_error_line_and_exit_2():
    _assert_one_error_line(grpo("train", "algo.num_generatons=8", "--cfg", "job"),
                           "unknown config key 'algo.num_generatons'")


def _assert_one_error_line(out: subprocess.CompletedProcess, needle: str) -> None:
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_help_and_recipes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the configs are found from any folder
    assert "train" in in_process.grpo(capsys, "--help").stdout
    assert "config groups" in in_process.grpo(capsys, "train", "--help").stdout
    listing = in_process.grpo(capsys, "recipes").stdout
    for name in RECIPES:
        assert name in listing

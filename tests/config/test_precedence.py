"""The composition rule, checked key by key against the YAML files themselves.

schema < group option < recipe < command line, where a group option typed on the command line
replaces the recipe's values for that group (compose.py). The expected value of every key is
worked out here from the schema and the files, never from a hand-kept table.
"""

from __future__ import annotations

import in_process
import pytest
from omegaconf import OmegaConf

from grpo_cli.config.compose import (
    GROUPS,
    apply_group_choices,
    compose_config,
    config_dir,
    file_choices,
    file_yaml,
    flat_values,
    group_options,
    recipe_dir,
)
from grpo_cli.config.schema import ConfigError, GrpoConfig

RECIPES = sorted(p.stem for p in recipe_dir().glob("*.yaml"))
# A required key a group leaves open, given on the command line so the config composes.
REQUIRED = {("data", "jsonl"): {"data.path": "x.jsonl"}}


def _schema() -> dict:
    return flat_values(OmegaConf.to_container(OmegaConf.structured(GrpoConfig)))


def expected(recipe: str, group: str | None = None, option: str | None = None,
             cli: dict | None = None) -> dict:
    """Every key's value under the rule, from the files: schema, then the options in force
    (train.yaml's, the recipe's, the command line's), then the recipe's values except for a
    group chosen on the command line, then the command line's key=value."""
    rfile = recipe_dir() / f"{recipe}.yaml"
    choices = {**file_choices(config_dir() / "train.yaml"), **file_choices(rfile)}
    if group is not None:
        choices[group] = option
    values = _schema()
    for g in GROUPS:
        values.update(flat_values(file_yaml(config_dir() / g / f"{choices[g]}.yaml"), f"{g}."))
    values.update({k: v for k, v in flat_values(file_yaml(rfile)).items()
                   if k.split(".")[0] != group})
    values.update(cli or {})
    return {k: (v.replace("${trainer.run_name}", values["trainer.run_name"])
                if isinstance(v, str) else v) for k, v in values.items()}


def check_against_rule(dcfg, want: dict) -> None:
    got = flat_values(OmegaConf.to_container(dcfg))
    for key, value in want.items():
        if value == {}:  # an empty mapping in the schema, filled by a group
            continue
        assert key in got, f"{key} missing from the composed config"
        assert got[key] == value, f"{key}: composed {got[key]!r}, the rule says {value!r}"
    for key in got:
        # The only keys the files do not name: each reward component's schema defaults.
        assert key in want or key.startswith("reward.components."), key


CASES = [(r, g, o) for r in [None, *RECIPES] for g in GROUPS for o in group_options(g)]


@pytest.mark.parametrize("recipe,group,option", CASES,
                         ids=[f"{r or 'default'}-{g}={o}" for r, g, o in CASES])
def test_every_option_under_every_recipe_follows_the_rule(recipe, group, option):
    cli = REQUIRED.get((group, option), {})
    args = [f"{group}={option}", *(f"{k}={v}" for k, v in cli.items())]
    dcfg, _ = compose_config("train", ([f"+recipe={recipe}"] if recipe else []) + args)
    check_against_rule(dcfg, expected(recipe or "quickstart", group, option, cli))


@pytest.mark.parametrize("recipe", [None, *RECIPES])
def test_every_recipe_alone_follows_the_rule(recipe):
    dcfg, _ = compose_config("train", [f"+recipe={recipe}"] if recipe else [])
    check_against_rule(dcfg, expected(recipe or "quickstart"))


def test_key_value_beats_a_group_chosen_on_the_command_line():
    dcfg, cfg = compose_config("train", ["+recipe=gsm8k_qwen7b", "algo=dr_grpo",
                                         "algo.loss_agg=token_mean"])
    assert cfg.algo.loss_agg == "token_mean" and cfg.algo.scale_rewards == "none"
    check_against_rule(dcfg, expected("gsm8k_qwen7b", "algo", "dr_grpo",
                                      {"algo.loss_agg": "token_mean"}))


def test_dr_grpo_is_dr_grpo_everywhere():
    for recipe in [None, *RECIPES]:
        _, cfg = compose_config("train", ([f"+recipe={recipe}"] if recipe else [])
                                + ["algo=dr_grpo"])
        assert (cfg.algo.loss_agg, cfg.algo.scale_rewards, cfg.algo.beta) == (
            "seq_mean_token_sum_norm", "none", 0.0), recipe


def test_the_note_names_the_replaced_keys():
    overrides = ["recipe=gsm8k_qwen7b", "algo=dr_grpo"]
    dcfg, _ = compose_config("train", ["+recipe=gsm8k_qwen7b"])
    notes = apply_group_choices("train", overrides, dcfg)
    assert notes == ["algo=dr_grpo replaces recipe gsm8k_qwen7b's algo values "
                     "(algo.loss_agg=token_mean -> seq_mean_token_sum_norm); to keep the "
                     "recipe's, add e.g. algo.loss_agg=token_mean"]
    assert dcfg.algo.loss_agg == "seq_mean_token_sum_norm"
    # A group the recipe sets nothing in: nothing to say.
    dcfg, _ = compose_config("train", ["+recipe=gsm8k_qwen7b"])
    assert apply_group_choices("train", ["recipe=gsm8k_qwen7b", "reward=r1"], dcfg) == []


def test_cfg_job_prints_dr_grpo_and_the_note_once(capsys):
    out = in_process.grpo(capsys, "train", "algo=dr_grpo", "--cfg", "job")
    assert out.returncode == 0, out.stderr
    algo = OmegaConf.create(out.stdout).algo
    assert (algo.loss_agg, algo.scale_rewards, algo.beta) == ("seq_mean_token_sum_norm",
                                                              "none", 0.0)
    assert out.stderr.strip().splitlines() == [
        "note: algo=dr_grpo replaces recipe quickstart's algo values (algo.loss_agg=token_mean"
        " -> seq_mean_token_sum_norm); to keep the recipe's, add e.g. algo.loss_agg=token_mean"]


# ------------------------------------------------------------------------ defaults live once

def _option_files():
    return [(g, o) for g in GROUPS for o in group_options(g)]


@pytest.mark.parametrize("group,option", _option_files())
def test_a_group_file_states_only_what_differs_from_the_schema(group, option):
    schema = _schema()
    for key, value in flat_values(file_yaml(config_dir() / group / f"{option}.yaml"),
                                  f"{group}.").items():
        assert key in schema or key.startswith("reward.components."), key
        assert schema.get(key) != value, f"{group}/{option}.yaml repeats the default {key}"


@pytest.mark.parametrize("recipe", RECIPES)
def test_a_recipe_states_only_what_it_changes(recipe):
    rfile = recipe_dir() / f"{recipe}.yaml"
    train_choices = file_choices(config_dir() / "train.yaml")
    for group, option in file_choices(rfile).items():
        assert train_choices[group] != option, f"{recipe} re-picks {group}={option}"
    without = expected(recipe)
    choices = {**train_choices, **file_choices(rfile)}
    beneath = _schema()
    for g in GROUPS:
        beneath.update(flat_values(file_yaml(config_dir() / g / f"{choices[g]}.yaml"), f"{g}."))
    for key, value in flat_values(file_yaml(rfile)).items():
        assert without[key] == value
        assert beneath.get(key) != value, f"{recipe} repeats {key}={value}"


def test_the_quickstart_values_live_in_the_quickstart_recipe_only():
    train = file_yaml(config_dir() / "train.yaml")
    assert set(train) == {"defaults"}
    assert {"recipe": "quickstart"} in train["defaults"]


# ------------------------------------------------------------- keys of the other command

@pytest.mark.parametrize("override", ["checkpoint=x", "compare=a,b", "eval.completions=f.jsonl",
                                      "eval.out=o"])
def test_train_refuses_eval_keys(override):
    with pytest.raises(ConfigError, match="read only by `grpo eval`"):
        compose_config("train", [override])


@pytest.mark.parametrize("override", ["algo.beta=0.1", "optim.lr=1e-3", "trainer.max_steps=3",
                                      "algo=dapo", "optim=adamw_8bit", "logger.wandb.mode=online",
                                      "rollout.temperature=0.5", "rollout.max_new_tokens=9"])
def test_eval_refuses_train_keys(override):
    with pytest.raises(ConfigError, match="read only by `grpo train`"):
        compose_config("eval", [override], for_training=False)


def test_keys_both_commands_read_are_accepted_by_both():
    _, cfg = compose_config("eval", ["trainer.seed=3", "eval.limit=5", "eval.temperature=0.5",
                                     "logger.console=quiet", "rollout.merge_adapters=off",
                                     "trainer.cpu_threads=1"], for_training=False)
    assert (cfg.trainer.seed, cfg.eval.limit, cfg.eval.temperature) == (3, 5, 0.5)
    _, cfg = compose_config("train", ["eval.limit=7", "eval.num_samples=2"])
    assert (cfg.eval.limit, cfg.eval.num_samples) == (7, 2)


def test_rollout_engine_is_hf_or_vllm():
    # issue 17 brought rollout.engine back (it was removed when hf was the only engine)
    assert compose_config("train", ["rollout.engine=hf"])[1].rollout.engine == "hf"
    with pytest.raises(ConfigError, match="choose one of: hf, vllm"):
        compose_config("train", ["rollout.engine=tgi"])

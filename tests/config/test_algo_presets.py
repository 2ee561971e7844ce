"""The loss-variant presets (algo=gspo, algo=cispo, algo=sapo) and the rules of their keys (and of
reward.aggregation, GDPO's)."""

from __future__ import annotations

import in_process
import pytest
from omegaconf import OmegaConf

from grpo_cli.config.compose import compose_config
from grpo_cli.config.schema import ConfigError

PRESETS = {
    "gspo": {"ratio_level": "sequence", "policy_loss": "clip", "epsilon_low": 3e-4,
             "epsilon_high": 4e-4, "beta": 0.0, "loss_agg": "seq_mean_token_mean",
             "delta": None},
    "cispo": {"ratio_level": "token", "policy_loss": "cispo", "epsilon_low": 1.0,
              "epsilon_high": 0.28, "beta": 0.0, "loss_agg": "token_mean", "delta": None},
    "sapo": {"ratio_level": "token", "policy_loss": "sapo", "sapo_tau_pos": 1.0,
             "sapo_tau_neg": 1.05, "beta": 0.0, "loss_agg": "seq_mean_token_mean",
             "delta": None},
}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_cfg_job_shows_the_presets_values(preset, capsys):
    out = in_process.grpo(capsys, "train", f"algo={preset}", "--cfg", "job")
    assert out.returncode == 0, out.stderr
    algo = OmegaConf.create(out.stdout).algo
    for key, want in PRESETS[preset].items():
        assert algo[key] == (pytest.approx(want) if isinstance(want, float) else want), key


def test_the_defaults_are_grpos_token_clip():
    _, cfg = compose_config("train", [])
    assert (cfg.algo.policy_loss, cfg.algo.ratio_level, cfg.algo.delta, cfg.algo.entropy_coef,
            cfg.algo.top_entropy_quantile) == ("clip", "token", None, 0.0, 1.0)


def test_delta_composes_above_the_clip():
    _, cfg = compose_config("train", ["algo.delta=4"])
    assert cfg.algo.delta == 4.0


@pytest.mark.parametrize("overrides,needle", [
    (["algo.policy_loss=ppo"], "algo.policy_loss='ppo' is not allowed"),
    (["algo.ratio_level=group"], "algo.ratio_level='group' is not allowed"),
    (["algo.delta=1"], r"algo\.delta=1\.0 is out of range; it must be > 1"),
    (["algo.delta=1.2", "algo.epsilon_high=0.28"], r"must be > 1 \+ algo\.epsilon_high = 1\.28"),
    (["algo=cispo", "algo.delta=4"], "cispo has none"),
    (["algo=sapo", "algo.delta=4"], "sapo has none"),
    (["algo.sapo_tau_neg=2"], r"algo\.sapo_tau_neg=2\.0 shapes the gate of algo\.policy_loss=sapo"),
    (["algo=sapo", "algo.sapo_tau_pos=0"], r"algo\.sapo_tau_pos=0\.0 is out of range"),
    (["algo.epsilon_low=1"], "only algo.policy_loss=cispo takes 1"),
    (["algo.top_entropy_quantile=0"], r"algo\.top_entropy_quantile=0\.0 is out of range"),
    (["algo.top_entropy_quantile=1.5"], r"must be <= 1"),
    (["reward.aggregation=mean"], "reward.aggregation='mean' is not allowed"),
    (["algo.entropy_coef=-0.1"], r"algo\.entropy_coef=-0\.1 is out of range; it must be >= 0"),
])
def test_bad_loss_variant_values_are_one_line_errors(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        compose_config("train", overrides)


def test_sapo_takes_its_own_temperatures():
    _, cfg = compose_config("train", ["algo=sapo", "algo.sapo_tau_pos=2", "algo.sapo_tau_neg=3"])
    assert (cfg.algo.sapo_tau_pos, cfg.algo.sapo_tau_neg) == (2.0, 3.0)


def test_gdpo_aggregation_composes(capsys):
    out = in_process.grpo(capsys, "train", "reward.aggregation=normalize_then_sum",
                          "algo.scale_rewards=batch", "--cfg", "job")
    assert out.returncode == 0, out.stderr
    cfg = OmegaConf.create(out.stdout)
    assert (cfg.reward.aggregation, cfg.algo.scale_rewards) == ("normalize_then_sum", "batch")


def test_the_schemas_choices_are_the_registries_names():
    from dataclasses import fields

    from grpo_cli.algo.advantages import REWARD_AGGREGATIONS
    from grpo_cli.algo.policy_losses import POLICY_LOSSES, RATIO_LEVELS
    from grpo_cli.config.schema import AlgoConfig, RewardConfig

    def choices(schema, name):
        return set(next(f for f in fields(schema) if f.name == name).metadata["choices"])

    assert choices(AlgoConfig, "policy_loss") == set(POLICY_LOSSES)
    assert choices(AlgoConfig, "ratio_level") == set(RATIO_LEVELS)
    assert choices(RewardConfig, "aggregation") == set(REWARD_AGGREGATIONS)

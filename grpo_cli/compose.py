"""Compose a run config with Hydra: schema -> group defaults -> train.yaml -> recipe -> overrides.

Configs and recipes ship inside the package (`grpo_cli/configs`, with recipes as the group
`recipe`); in a source checkout they are read from the repository's `configs/` and
`recipes/` (`configs/recipe` links to `recipes/`). Every failure here is a `ConfigError`: one
line naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import fields, is_dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from grpo_cli.config import ConfigError, GrpoConfig, RewardComponent, schema_keys, validate

GROUPS = ("model", "data", "reward", "algo", "rollout", "optim", "logger")


def config_dir() -> Path:
    pkg = Path(__file__).resolve().parent
    for candidate in (pkg / "configs", pkg.parent / "configs"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise ConfigError(f"grpo's config folder is missing (looked in {pkg / 'configs'})")


def recipe_dir() -> Path:
    return config_dir() / "recipe"


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def _register_schema() -> None:
    ConfigStore.instance().store(name="grpo_schema", node=GrpoConfig)


def _schema_node(path: str):
    """The dataclass type at a dotted path, or None when the path is not a dataclass."""
    node = GrpoConfig
    for part in path.split("."):
        match = [f for f in fields(node) if f.name == part]
        if not match:
            return None
        factory = match[0].default_factory
        if not (isinstance(factory, type) and is_dataclass(factory)):
            return None
        node = factory
    return node


def _check_override_key(override: str) -> None:
    """Catch a misspelt key before Hydra does, with a 'did you mean' suggestion."""
    m = re.match(r"^([+~]{0,2})([A-Za-z_][\w.@/]*)(=|$)", override)
    if not m:
        raise ConfigError(f"cannot read the override {override!r}: write key=value")
    prefix, key = m.group(1), m.group(2)
    if key in ("recipe",) or key.startswith("hydra"):
        if key == "recipe" and prefix != "+":
            raise ConfigError(f"choose a recipe with +recipe=NAME (got {override!r})")
        return
    if key in GROUPS:
        return
    if key.startswith("reward.components."):
        return  # user-named components: checked against RewardComponent after compose
    keys = schema_keys()
    if key in keys:
        return
    parent, _, leaf = key.rpartition(".")
    node = _schema_node(parent) if parent else GrpoConfig
    if node is None:
        close = difflib.get_close_matches(key, keys, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"unknown config key '{key}'{hint}")
    allowed = [f.name for f in fields(node)]
    close = difflib.get_close_matches(leaf, allowed, n=1)
    hint = f"did you mean {parent + '.' if parent else ''}{close[0]}? " if close else ""
    raise ConfigError(f"unknown config key '{key}': {hint}allowed in "
                      f"{parent or 'the top level'}: {', '.join(allowed)}")


def _one_line(exc: BaseException) -> str:
    cause = exc.__cause__
    if isinstance(cause, OmegaConfBaseException) and "Error merging override" in str(exc):
        override = str(exc).split("Error merging override", 1)[1].strip()
        return f"{override}: {str(cause).strip().splitlines()[0]}"
    msg = str(exc).strip()
    full_key = re.search(r"full_key:\s*(\S+)", msg)
    first = msg.splitlines()[0] if msg else type(exc).__name__
    if "Could not find 'recipe/" in msg or "Could not load 'recipe/" in msg:
        name = re.search(r"recipe/([^'\s]+)", msg).group(1)
        return (f"unknown recipe '{name}'; available: "
                + ", ".join(p.stem for p in sorted(recipe_dir().glob('*.yaml'))))
    group = re.search(r"Could not (?:find|load) '(\w+)/([^']+)'", msg)
    if group and group.group(1) in GROUPS:
        g = group.group(1)
        return (f"unknown {g} option '{group.group(2)}'; available: "
                + ", ".join(group_options(g)))
    if full_key:
        return f"{full_key.group(1)}: {first}"
    return first


def compose_config(config_name: str, overrides: list[str], *,
                   for_training: bool = True) -> tuple[DictConfig, GrpoConfig]:
    """Compose and validate. Returns the DictConfig (for printing/saving) and the typed object."""
    for override in overrides:
        _check_override_key(override)
    _register_schema()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3",
                                   job_name="grpo"):
            cfg = compose(config_name=config_name, overrides=overrides)
        with open_dict(cfg):
            cfg.pop("hydra", None)
        return finish(cfg, for_training=for_training)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_one_line(exc)) from None
    finally:
        GlobalHydra.instance().clear()


def finish(cfg: DictConfig, *, for_training: bool = True) -> tuple[DictConfig, GrpoConfig]:
    """Resolve interpolations, type-check against the schema and validate ranges and rules."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(GrpoConfig), cfg)
        for name in list(merged.reward.components):
            node = merged.reward.components[name]
            if not isinstance(node, DictConfig):
                raise ConfigError(f"reward.components.{name} must be a mapping with fn, weight, "
                                  f"kwargs, timeout_s, fallback (got {node!r})")
            try:
                merged.reward.components[name] = OmegaConf.merge(
                    OmegaConf.structured(RewardComponent), node)
            except OmegaConfBaseException as exc:
                allowed = ", ".join(RewardComponent.__dataclass_fields__)
                raise ConfigError(f"reward.components.{name}: {str(exc).splitlines()[0]} "
                                  f"(allowed: {allowed})") from None
        OmegaConf.resolve(merged)
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise ConfigError(f"{missing[0]} is required but has no value (set {missing[0]}=...)")
        obj: GrpoConfig = OmegaConf.to_object(merged)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_one_line(exc)) from None
    validate(obj, for_training=for_training)
    return merged, obj

"""Compose a run config with Hydra: schema -> group options -> recipe -> command line.

Precedence, lowest first:
1. the schema (schema.py): every key's default, once;
2. the group options (`configs/<group>/<option>.yaml`): what each option changes;
3. the recipe (`+recipe=NAME`; for `grpo train` the quickstart when none is named): what
   the recipe changes, including its own group choices (`override /data: gsm8k`);
4. the command line: `key=value` beats everything; a group option typed there
   (`algo=dr_grpo`) is the user's choice too, so it wins over the recipe's values for keys of
   that group: they are reset to what the chosen option says (also when it is the option
   the recipe picks: `algo=grpo` means GRPO as configs/algo/grpo.yaml has it), and one line
   says which (`apply_group_choices`).

Configs and recipes ship inside the package (`grpo_cli/configs`, with recipes as the group
`recipe`); in a source checkout they are read from the repository's `configs/` and
`recipes/` (`configs/recipe` links to `recipes/`). Every failure here is a `ConfigError`: one
line naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

import difflib
import logging
import re
from dataclasses import fields, is_dataclass
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from grpo_cli.config.rules import validate
from grpo_cli.config.schema import (
    ConfigError,
    GrpoConfig,
    RewardComponent,
    command_of,
    schema_keys,
)

log = logging.getLogger("grpo")

GROUPS = ("model", "data", "reward", "algo", "rollout", "optim", "logger")
# The command each config file serves (its keys are checked with config.command_of).
COMMANDS = {"train": "train", "eval": "eval", "sample": "sample", "sft": "sft"}


def config_dir() -> Path:
    """`grpo_cli/configs` in an installed wheel, else the source checkout's `configs/`."""
    pkg = Path(__file__).resolve().parents[1]  # grpo_cli/
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


def _override_key(override: str) -> tuple[str, str]:
    """(prefix, dotted key) of a command-line override."""
    m = re.match(r"^([+~]{0,2})([A-Za-z_][\w.@/]*)(=|$)", override)
    if not m:
        raise ConfigError(f"cannot read the override {override!r}: write key=value")
    return m.group(1), m.group(2)


def _check_command(key: str, command: str) -> None:
    """A key only other commands read is refused: it would be accepted and ignored."""
    owner = command_of(key)
    if owner == "both" or command in owner.split(","):
        return
    keys = schema_keys()
    top = [k for k in keys if command_of(k) == owner
           and command_of(k.rpartition(".")[0] or "") != owner]
    shared = [k for k in keys if command_of(k) == "both" and k.rpartition(".")[0] in top]
    but = f" except {', '.join(shared)}" if shared else ""
    who = " / ".join(f"`grpo {c}`" for c in owner.split(","))
    raise ConfigError(f"{key} is read only by {who}, not by `grpo {command}`; drop it "
                      f"({who.replace('`', '')} alone: {', '.join(top)}{but})")


def _check_override_key(override: str, command: str = "train") -> None:
    """Catch a misspelt key before Hydra does, with a 'did you mean' suggestion, and a key
    of the other command."""
    prefix, key = _override_key(override)
    if key in ("recipe",) or key.startswith("hydra"):
        if key == "recipe" and prefix != "+":
            raise ConfigError(f"choose a recipe with +recipe=NAME (got {override!r})")
        return
    if key in GROUPS:
        _check_command(key, command)
        return
    if key.startswith("reward.components."):
        return  # user-named components: checked against RewardComponent after compose
    keys = schema_keys()
    if key in keys:
        _check_command(key, command)
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


def _hydra_compose(config_name: str, overrides: list[str]) -> DictConfig:
    _register_schema()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3",
                                   job_name="grpo"):
            cfg = compose(config_name=config_name, overrides=overrides)
        with open_dict(cfg):
            cfg.pop("hydra", None)
        return cfg
    finally:
        GlobalHydra.instance().clear()


def compose_config(config_name: str, overrides: list[str], *, for_training: bool = True,
                   notes: list[str] | None = None) -> tuple[DictConfig, GrpoConfig]:
    """Compose and validate. Returns the DictConfig (for printing/saving) and the typed object.

    Each group option that replaced a recipe's values gives one note (see the module
    docstring): appended to `notes` when given (`grpo train` shows them with its start-up
    lines, which a bad-input error drops), else logged as a `note:` line at once."""
    command = COMMANDS.get(config_name, "train")
    for override in overrides:
        _check_override_key(override, command)
    overrides = _hydra_overrides(config_name, overrides)
    try:
        cfg = _hydra_compose(config_name, overrides)
        for note in apply_group_choices(config_name, overrides, cfg):
            if notes is None:
                log.warning("note: %s", note)
            else:
                notes.append(note)
        return finish(cfg, for_training=for_training)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_one_line(exc)) from None


# ----------------------------------------------------------------- recipes vs group options

def _default_recipe(config_name: str) -> str | None:
    return file_choices(config_dir() / f"{config_name}.yaml").get("recipe")


def _hydra_overrides(config_name: str, overrides: list[str]) -> list[str]:
    """`+recipe=NAME` replaces the config's default recipe, where it has one."""
    if _default_recipe(config_name) is None:
        return list(overrides)
    return [o[1:] if o.startswith("+recipe=") else o for o in overrides]


def file_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def file_choices(path: Path) -> dict[str, str]:
    """group -> option picked in a config file's defaults list (`g: o`, `override /g: o`)."""
    choices = {}
    for entry in file_yaml(path).get("defaults", []):
        if isinstance(entry, dict):
            for key, option in entry.items():
                choices[key.replace("override", "").strip().lstrip("/")] = option
    return choices


def flat_values(tree: dict, prefix: str = "") -> dict[str, object]:
    """Dotted leaf keys of a YAML mapping (the `defaults` list left out)."""
    out: dict[str, object] = {}
    for key, value in tree.items():
        if key == "defaults" and not prefix:
            continue
        if isinstance(value, dict) and value:
            out.update(flat_values(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _chosen_recipe(config_name: str, overrides: list[str]) -> str | None:
    named = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("recipe=")]
    return named[-1] if named else _default_recipe(config_name)


def apply_group_choices(config_name: str, overrides: list[str], cfg: DictConfig) -> list[str]:
    """Reset, in the composed `cfg`, the recipe's values for keys of each group the command
    line chose anew; return the notes that say so (empty when nothing changed)."""
    recipe = _chosen_recipe(config_name, overrides)
    if recipe is None:
        return []
    path = recipe_dir() / f"{recipe}.yaml"
    replaced = {k: o.split("=", 1)[1] for o in overrides
                if not o.startswith(("+", "~")) and (k := o.split("=", 1)[0]) in GROUPS}
    recipe_keys = [k for k in flat_values(file_yaml(path)) if k.split(".")[0] in replaced]
    if not recipe_keys:
        return []
    without = [o for o in overrides if not o.lstrip("+").startswith("recipe=")]
    if _default_recipe(config_name) is not None:
        without.append("~recipe")
    plain = _hydra_compose(config_name, without)
    changed: dict[str, list[str]] = {}
    for key in recipe_keys:
        before, after = OmegaConf.select(cfg, key), OmegaConf.select(plain, key)
        if before != after:
            OmegaConf.update(cfg, key, after, force_add=True)
            changed.setdefault(key.split(".")[0], []).append(f"{key}={before} -> {after}")
    return [f"{group}={replaced[group]} replaces recipe {recipe}'s {group} values "
            f"({', '.join(items)}); to keep the recipe's, add e.g. "
            f"{items[0].split(' -> ')[0]}" for group, items in changed.items()]


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

"""The config of `grpo eval` (and `grpo sample`): a checkpoint's saved config, with the
command line on top.

A trained checkpoint is evaluated the way it was trained: its `config.yaml` supplies the
model, data adapter, prompt template and rewards. What the user types still wins: a group
choice (`data=math500`) replaces that whole group, and a `key=value` replaces that key.
Without a checkpoint, the config is composed from `configs/eval.yaml` as usual.
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from grpo_cli.config.compose import GROUPS, compose_config, finish
from grpo_cli.config.schema import GrpoConfig
from grpo_cli.trainer.checkpoint import load_checkpoint_config


def eval_config(overrides: list[str], command: str = "eval") -> tuple[DictConfig, GrpoConfig]:
    """`command`: "eval" or "sample" (configs/<command>.yaml and the keys it reads)."""
    dcfg, cfg = compose_config(command, overrides, for_training=False)
    if not cfg.checkpoint:
        return dcfg, cfg
    ckpt = Path(cfg.checkpoint)
    base = load_checkpoint_config(ckpt)
    for override in overrides:
        key = re.split(r"=", override.lstrip("+~"), maxsplit=1)[0]
        if key in GROUPS:
            base[key] = dcfg[key]
        elif key != "recipe":
            OmegaConf.update(base, key, OmegaConf.select(dcfg, key), force_add=True)
    # Keys the training run never set keep the eval defaults (eval.*, sample.*, compare).
    base["eval"] = dcfg["eval"]
    base["sample"] = dcfg["sample"]
    base["checkpoint"] = str(ckpt)
    base["compare"] = dcfg["compare"]
    base.model.adapter_path = str(ckpt / "policy") if (ckpt / "policy" / "adapter_config.json"
                                                       ).is_file() else None
    if base.model.adapter_path is None and (ckpt / "policy").is_dir():
        base.model.name_or_path = str(ckpt / "policy")  # a full fine-tune: the model itself
    return finish(base, for_training=False)

"""Checkpoints on disk: written atomically, found again by resume, pruned to the newest K;
and the run's `Checkpointer`, which decides what goes in one and when one is written.

A checkpoint folder `<run_dir>/checkpoints/<name>/` holds

    policy/            the LoRA adapter + tokenizer (or the full model when LoRA is off)
    trainer_state.pt   optimizer, scheduler, KL controller, RNG states, data position, step
    config.yaml        the fully resolved run config
    meta.json          {"step": N, ...}: written last; a folder without it is not a checkpoint

Atomicity: everything is written into `checkpoints/.tmp-<name>-<pid>/`, flushed, and renamed
into place with one `os.replace` (an existing `final`/`best` is first moved aside to
`.tmp-old-<name>-<pid>`, then deleted). A process killed mid-write leaves only a `.tmp-*`
folder, which resume ignores and the next save deletes; a save that fails with an error (disk
full) deletes its own `.tmp-*` folder before the error goes on. A kill in the instant between
moving an old `final` aside and renaming the new one in is repaired by `recover_interrupted`,
which the trainer runs before it looks for a checkpoint to resume.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from grpo_cli.errors import UserError
from grpo_cli.trainer.hooks import NO_HOOKS, Hooks

if TYPE_CHECKING:
    from grpo_cli.trainer.parts import RunParts, RunState

META = "meta.json"
STATE = "trainer_state.pt"


def rng_state() -> dict[str, Any]:
    """Every RNG the run draws from, as plain tensors/lists/numbers (loadable with
    `torch.load(weights_only=True)`, so resuming never unpickles arbitrary objects)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {"python": [version, list(internal), gauss],
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


def save_checkpoint(ckpt_root: Path, name: str, *, save_policy_fn, trainer_state: dict,
                    config: DictConfig, step: int, extra_meta: dict | None = None,
                    hooks: Hooks = NO_HOOKS) -> Path:
    """Write checkpoint `name` atomically; returns its final path.

    On any error (OSError when the disk is full) the half-written folder is removed and the
    error goes on; the checkpoint that had this name before is left as it was.
    """
    ckpt_root.mkdir(parents=True, exist_ok=True)
    recover_interrupted(ckpt_root)
    for stale in ckpt_root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = ckpt_root / f".tmp-{name}-{os.getpid()}"
    try:
        tmp.mkdir()
        save_policy_fn(tmp / "policy")
        torch.save(trainer_state, tmp / STATE)
        (tmp / "config.yaml").write_text(OmegaConf.to_yaml(config))
        meta = {"step": step, "name": name, **(extra_meta or {})}
        with open(tmp / META, "w") as f:
            json.dump(meta, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        hooks.in_checkpoint(step)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = ckpt_root / name
    if final.exists():
        aside = ckpt_root / f".tmp-old-{name}-{os.getpid()}"
        os.replace(final, aside)
        os.replace(tmp, final)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(ckpt_root)
    return final


def recover_interrupted(ckpt_root: Path) -> None:
    """Put back a `final`/`best` that a killed save had moved aside but not yet replaced."""
    if not ckpt_root.is_dir():
        return
    for aside in ckpt_root.glob(".tmp-old-*"):
        m = re.fullmatch(r"\.tmp-old-(.+)-\d+", aside.name)
        if m and is_checkpoint(aside) and not (ckpt_root / m.group(1)).exists():
            os.replace(aside, ckpt_root / m.group(1))


def is_checkpoint(path: Path) -> bool:
    return (path / META).is_file() and (path / "config.yaml").is_file()


def checkpoint_step(path: Path) -> int:
    return int(json.loads((path / META).read_text())["step"])


def list_step_checkpoints(ckpt_root: Path) -> list[Path]:
    found = [p for p in ckpt_root.glob("step-*") if re.fullmatch(r"step-\d+", p.name)
             and is_checkpoint(p)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def prune(ckpt_root: Path, keep_last: int) -> None:
    for old in list_step_checkpoints(ckpt_root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def find_latest(run_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step under run_dir/checkpoints (final wins ties)."""
    root = run_dir / "checkpoints"
    candidates = list_step_checkpoints(root) if root.is_dir() else []
    final = root / "final"
    if is_checkpoint(final):
        candidates.append(final)
    if not candidates:
        return None
    return max(candidates, key=lambda p: (checkpoint_step(p), p.name == "final"))


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """trainer.resume: null -> None; auto -> newest checkpoint or None; a path -> that one."""
    if resume is None:
        return None
    if resume == "auto":
        return find_latest(run_dir)
    path = Path(resume)
    if path.is_dir() and not is_checkpoint(path) and find_latest(path) is not None:
        return find_latest(path)  # a run directory was given
    if not is_checkpoint(path):
        raise UserError(f"trainer.resume={resume}: not a checkpoint folder (expected "
                        f"{META} and config.yaml inside; use trainer.resume=auto or a path "
                        "like outputs/RUN/checkpoints/step-50)")
    return path


def load_checkpoint_config(path: Path) -> DictConfig:
    """The saved config of a checkpoint, with one-line errors for everything that is off."""
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist")
    if not path.is_dir():
        raise UserError(f"checkpoint {path} is not a folder")
    if not (path / "config.yaml").is_file():
        if (path / "checkpoints").is_dir():
            raise UserError(f"{path} is a run folder, not a checkpoint; use "
                            f"{path / 'checkpoints' / 'final'}")
        raise UserError(f"checkpoint {path} has no config.yaml: not a grpo checkpoint")
    if not (path / "policy").is_dir():
        raise UserError(f"checkpoint {path} has no policy/ folder: it is incomplete")
    try:
        cfg = OmegaConf.load(path / "config.yaml")
    except Exception as exc:  # noqa: BLE001 - any parse failure is the same user error
        raise UserError(f"{path / 'config.yaml'}: cannot be read ({exc})") from None
    if not isinstance(cfg, DictConfig):
        raise UserError(f"{path / 'config.yaml'}: not a config mapping")
    return cfg


def load_trainer_state(path: Path) -> dict:
    try:
        return torch.load(path / STATE, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file is a user error
        raise UserError(f"{path / STATE}: cannot be read as a grpo trainer state "
                        f"({type(exc).__name__}); was it written by grpo?") from None


def load_policy_weights(model: torch.nn.Module, folder: Path) -> None:
    """Load a saved adapter (or full model) into the already-built policy, in place."""
    from safetensors.torch import load_file

    adapter = folder / "adapter_model.safetensors"
    if adapter.is_file():
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, load_file(str(adapter)))
        unexpected = getattr(result, "unexpected_keys", None)
        if unexpected:
            raise UserError(f"{adapter}: {len(unexpected)} tensors do not fit this model "
                            f"(e.g. {unexpected[0]}); was it saved with another LoRA shape?")
        return
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise UserError(f"{folder}: no adapter_model.safetensors or model weights to resume from")
    state = {}
    for shard in shards:
        state.update(load_file(str(shard)))
    missing, _ = model.load_state_dict(state, strict=False)
    trainable_missing = [k for k in missing if "lm_head" not in k]
    if trainable_missing:
        raise UserError(f"{folder}: weights missing for {trainable_missing[0]}")


class Checkpointer:
    """The run's checkpoints: what one holds, resuming from one, checkpoints/best, pruning to
    the newest trainer.keep_last step-N folders, and what a failed save means.

    A save that fails (disk full) never replaces the previous checkpoint. A periodic one is a
    warning and training goes on (space may be freed meanwhile; the next save retries); one
    that ends the run (`ends_run`: final, stop, bad steps) is a one-line UserError naming the
    newest complete checkpoint.
    """

    def __init__(self, parts: RunParts, run_dir: Path, config: DictConfig) -> None:
        self.parts = parts
        self.run_dir = run_dir
        self.root = run_dir / "checkpoints"
        self.config = config  # the resolved run config, saved in every checkpoint

    @staticmethod
    def restore(path: Path, policy: Any, optimizer: torch.optim.Optimizer, scheduler: Any,
                kl_ctl: Any, sampler: Any) -> tuple[int, dict | None]:
        """Load checkpoint `path` into the built objects and the RNGs; returns its step and
        the best eval so far (what `_trainer_state` wrote)."""
        state = load_trainer_state(path)
        load_policy_weights(policy.model, path / "policy")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        # The optimizer state holds the rate the saved schedule set for the next step; a resume
        # that changed trainer.max_steps (or the schedule) gets its new schedule's rate.
        for group, base, rate in zip(optimizer.param_groups, scheduler.base_lrs,
                                     scheduler.lr_lambdas):
            group["lr"] = base * rate(scheduler.last_epoch)
        kl_ctl.load_state_dict(state["kl_ctl"])
        sampler.position = state["data_position"]
        step, best = state["step"], state.get("best")
        set_rng_state(state["rng"])
        return step, best

    def _trainer_state(self, step: int, best: dict | None) -> dict:
        p = self.parts
        return {"optimizer": p.optimizer.state_dict(), "scheduler": p.scheduler.state_dict(),
                "kl_ctl": p.kl_ctl.state_dict(), "data_position": p.sampler.position,
                "step": step, "best": best, "rng": rng_state()}

    def save_step(self, state: RunState, *, ends_run: bool = False, **meta: Any) -> Path | None:
        """checkpoints/step-<N> of the step just run; older ones beyond keep_last go."""
        return self._save(f"step-{state.step}", state.step, state, ends_run, meta)

    def save_final(self, state: RunState) -> Path | None:
        return self._save("final", self.parts.cfg.trainer.max_steps, state, True, {})

    def keep_if_best(self, state: RunState, accuracy: float) -> None:
        """checkpoints/best when `accuracy` (held-out eval) beats every earlier one."""
        if state.best is not None and accuracy <= state.best["accuracy"]:
            return
        state.best = {"accuracy": accuracy, "step": state.step}
        self._save("best", state.step, state, False, {})
        self.parts.tracker.info(f"step {state.step}: eval accuracy {accuracy:.3f} is the best "
                                "so far; saved checkpoints/best")

    def _save(self, name: str, step: int, state: RunState, ends_run: bool,
              meta: dict) -> Path | None:
        from grpo_cli.policy.model import save_policy

        p = self.parts
        if not p.dist.main:  # rank 0 writes; every rank holds the same weights and state
            return None
        try:
            path = save_checkpoint(self.root, name,
                                   save_policy_fn=lambda d: save_policy(p.policy, d),
                                   trainer_state=self._trainer_state(step, state.best),
                                   config=self.config, step=step, extra_meta=meta,
                                   hooks=p.hooks)
        except OSError as exc:
            problem = (f"could not write checkpoint {name} at step {step} to {self.root} "
                       f"({exc.strerror or exc}); the newest complete checkpoint is "
                       f"{find_latest(self.run_dir) or 'none'}")
            if ends_run:
                raise UserError(f"{problem}: free space and resume with trainer.resume=auto"
                                ) from None
            p.tracker.warn(f"{problem}; training goes on and the next save tries again")
            return None
        if name.startswith("step-"):
            prune(self.root, p.cfg.trainer.keep_last)
        p.tracker.log_checkpoint(path, step)
        return path

"""The run folder's two promises: a new run never overwrites an old one, and a stopped run
prints the exact command that resumes it.

    check_run_dir(run_dir, resume)   before any work: a folder that already holds files is
                                     refused unless the run resumes (one line, exit 2)
    resume_command(overrides)        `<program> train <overrides> trainer.resume=auto`, each
                                     argument shell-quoted, runnable as it is printed

The program in the hint is the one that is running: `grpo` when that name on PATH is this
very script, else the script's absolute path, else `<python> -m grpo_cli.cli` (a run started
with `python -m grpo_cli.cli`, or a `grpo` that is not on PATH); under torchrun,
`torchrun --nproc_per_node=N -m grpo_cli` with the process counts it ran with.

A restart by `torchrun --max-restarts` (TORCHELASTIC_RESTART_COUNT > 0) with
trainer.resume=auto before the first checkpoint starts the run again in its own folder.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from pathlib import Path

from grpo_cli.errors import UserError

_RESUME_OVERRIDE = re.compile(r"^[+~]{0,2}trainer\.resume(=|$)")


def check_run_dir(run_dir: Path, resume: str | None, has_checkpoint: bool) -> None:
    """Refuse to start a fresh run in a folder that holds an earlier run's files."""
    if not run_dir.is_dir():
        return
    entries = sorted(p.name for p in run_dir.iterdir() if p.name != ".write-test")
    if not entries:
        return
    shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
    new_name = "start a new run with trainer.run_name=NAME (or another trainer.output_dir)"
    if resume is None:
        raise UserError(f"trainer.output_dir={run_dir} already holds a run ({shown}); continue "
                        f"it with trainer.resume=auto, or {new_name}")
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0
    if resume == "auto" and not has_checkpoint and not restarted:
        raise UserError(f"trainer.resume=auto: {run_dir} holds files ({shown}) but no "
                        f"checkpoint to resume from; {new_name}")


def _launcher() -> list[str] | None:
    """`torchrun ... -m grpo_cli` for a run torchrun started (None for a plain one): the
    process counts from its environment; other nodes' rendezvous options are the user's."""
    from grpo_cli.trainer.dist import launched_world_size

    world, local = launched_world_size(), os.environ.get("LOCAL_WORLD_SIZE")
    if world <= 1 or not local:
        return None
    nodes = max(1, world // max(int(local), 1))
    launch = ["torchrun", f"--nproc_per_node={local}"]
    if nodes > 1:
        launch[1:1] = [f"--nnodes={nodes}", "<your --rdzv options>"]
    return [*launch, "-m", "grpo_cli"]


def _program() -> list[str]:
    launcher = _launcher()
    if launcher is not None:
        return launcher
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if Path(argv0).name == "grpo" and Path(argv0).is_file():
        on_path = shutil.which("grpo")
        if on_path and Path(on_path).resolve() == Path(argv0).resolve():
            return ["grpo"]
        return [shlex.quote(str(Path(argv0).resolve()))]
    return [shlex.quote(sys.executable), "-m", "grpo_cli.cli"]


def resume_command(overrides: list[str]) -> str:
    """The shell command that resumes this run (see the module docstring)."""
    kept = [shlex.quote(o) for o in overrides if not _RESUME_OVERRIDE.match(o)]
    return " ".join([*_program(), "train", *kept, "trainer.resume=auto"])

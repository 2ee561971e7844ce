"""Weights & Biases backend, and the null backend that stands in for it.

The training loop never asks whether W&B is on: `start_wandb` returns an object with the
same methods either way (nanoGPT's null-logger pattern). W&B must never stop or slow
training: every call goes through `SafeBackend`, which on the first exception prints one
warning and swaps itself for the null backend for the rest of the run. `wandb.init` gets
a timeout (`init_timeout`), so an unreachable server costs at most that once.

Modes: `online`, `offline`, `disabled`, plus `auto` = online when the user is logged in
(a netrc entry for the W&B host, or WANDB_API_KEY), else offline with one line saying
where the run lies and the `wandb sync` command that uploads it. Run files go under
<run_dir>/wandb. The completions table is a `wandb.Table(log_mode="INCREMENTAL")`: each
log adds the new rows to the same table in the UI instead of replacing it.
"""

from __future__ import annotations

import netrc
import os
import re
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlparse

from grpo_cli.config.schema import WandbConfig

# Quiet, fast init: no git scan, no code upload, no W&B banner.
WANDB_ENV = {"WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true"}
RUN_ID_FILE = "wandb_run_id"


class NullBackend:
    """Accepts every call and does nothing (W&B disabled, or switched off after a failure)."""

    where: Optional[str] = None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def add_table_rows(self, key: str, columns: list[str], rows: list[list], step: int) -> None:
        pass

    def log_checkpoint(self, path: Path, step: int) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbBackend:
    """A live wandb run: metrics, growing tables, checkpoint artifacts."""

    def __init__(self, run: Any, wandb_module: Any, artifact_name: str,
                 log_checkpoints: bool) -> None:
        self.run = run
        self.wandb = wandb_module
        self.artifact_name = artifact_name
        self.log_checkpoints = log_checkpoints
        self.tables: dict[str, Any] = {}
        self.where = str(Path(run.dir).parent) if getattr(run, "dir", None) else None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.run.log(metrics, step=step)

    def add_table_rows(self, key: str, columns: list[str], rows: list[list], step: int) -> None:
        """Append rows to the table `key` and log it; the table keeps growing across logs."""
        table = self.tables.get(key)
        if table is None:
            table = self.tables[key] = self.wandb.Table(columns=columns, log_mode="INCREMENTAL")
        for row in rows:
            table.add_data(*row)
        self.run.log({key: table}, step=step)

    def log_checkpoint(self, path: Path, step: int) -> None:
        if not self.log_checkpoints:
            return
        artifact = self.wandb.Artifact(self.artifact_name, type="model", metadata={"step": step})
        artifact.add_dir(str(path))
        self.run.log_artifact(artifact, aliases=[f"step-{step}", "latest"])

    def finish(self) -> None:
        self.run.finish()


class SafeBackend:
    """Wraps a backend: the first exception from any call warns once and disables W&B."""

    def __init__(self, inner: Any, warn: Callable[[str], None]) -> None:
        self.inner = inner
        self.warn = warn
        self.where = getattr(inner, "where", None)

    def _call(self, method: str, *args: Any) -> None:
        try:
            getattr(self.inner, method)(*args)
        except Exception as exc:  # noqa: BLE001 - W&B must never stop training
            was_live = not isinstance(self.inner, NullBackend)
            self.inner = NullBackend()  # before warning: the warning itself is logged here
            if was_live:
                self.warn(f"W&B {method} failed ({type(exc).__name__}: {exc}); W&B logging is "
                          "off for the rest of this run (metrics.jsonl is unaffected)")

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._call("log", metrics, step)

    def add_table_rows(self, key: str, columns: list[str], rows: list[list], step: int) -> None:
        self._call("add_table_rows", key, columns, rows, step)

    def log_checkpoint(self, path: Path, step: int) -> None:
        self._call("log_checkpoint", path, step)

    def finish(self) -> None:
        self._call("finish")
        self.inner = NullBackend()


def _wandb_host() -> str:
    base = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    return urlparse(base).hostname or "api.wandb.ai"


def is_logged_in() -> bool:
    """True when WANDB_API_KEY is set or a netrc file holds the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        return netrc.netrc(path).authenticators(_wandb_host()) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: str) -> str:
    """The wandb mode to use: `auto` becomes online when logged in, else offline."""
    if mode != "auto":
        return mode
    return "online" if is_logged_in() else "offline"


def _artifact_name(run_name: str) -> str:
    """Artifact names allow letters, digits, '-', '_' and '.' only."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", run_name).strip("-") + "-checkpoint"


def _run_id(run_dir: Path, resume: bool) -> Optional[str]:
    """The id of the run's earlier W&B run when resuming, so the charts continue."""
    path = run_dir / "wandb" / RUN_ID_FILE
    if resume and path.is_file():
        return path.read_text().strip() or None
    return None


def start_wandb(cfg: WandbConfig, run_dir: Path, run_name: str, config: dict[str, Any],
                warn: Callable[[str], None], info: Callable[[str], None],
                resume: bool = False, init_timeout: float = 30.0) -> SafeBackend:
    """Start a W&B run per cfg.mode; any failure warns once and returns the null backend."""
    mode = resolve_mode(cfg.mode)
    if mode == "disabled":
        return SafeBackend(NullBackend(), warn)
    for key, value in WANDB_ENV.items():
        os.environ.setdefault(key, value)
    try:
        import wandb

        (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
        run_id = _run_id(run_dir, resume)
        run = wandb.init(
            project=cfg.project, entity=cfg.entity, name=cfg.name or run_name,
            group=cfg.group, tags=list(cfg.tags) or None, config=config, dir=str(run_dir),
            mode=mode, id=run_id, resume="allow" if run_id else None,
            settings=wandb.Settings(init_timeout=init_timeout, silent=True, disable_git=True,
                                    save_code=False, console="off"),
        )
        (run_dir / "wandb" / RUN_ID_FILE).write_text(run.id)
        backend = WandbBackend(run, wandb, _artifact_name(run_name), cfg.log_checkpoints)
    except Exception as exc:  # noqa: BLE001 - W&B must never stop training
        warn(f"W&B init failed ({type(exc).__name__}: {exc}); continuing without W&B "
             f"(metrics stay in {run_dir / 'metrics.jsonl'})")
        return SafeBackend(NullBackend(), warn)
    if mode == "offline":
        why = " (not logged in; `wandb login` to go online)" if cfg.mode == "auto" else ""
        info(f"W&B offline{why}: run stored in {backend.where}; upload it with: "
             f"wandb sync {backend.where}")
    else:
        url = getattr(run, "url", None)
        info(f"W&B run: {url}" if url else "W&B online")
    return SafeBackend(backend, warn)

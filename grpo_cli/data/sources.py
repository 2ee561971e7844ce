"""Where raw rows come from: a local folder or file, the Hugging Face hub, or a generator.

A :class:`Source` is a set of named splits loaded on demand. Each raw :class:`Row` carries
``where`` (``path/train.jsonl:17`` or ``openai/gsm8k[train] row 17``) so that every error
about it names the file and line.

Local paths (relative to the current directory):

- a folder with ``<split>.jsonl`` files (``train.jsonl``, ``test.jsonl``, ...);
- a hub-style folder of parquet files (``data/train-00000-of-00001.parquet``,
  ``main/test-*.parquet``, ``train.parquet``); ``data.hub_config`` picks a config subfolder;
- a single ``.jsonl`` or ``.parquet`` file: one unnamed split (the builder holds out
  ``data.test_size`` of it).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from grpo_cli.errors import UserError

SINGLE = "all"  # split name of a source that is one unnamed collection


@dataclass(frozen=True)
class Row:
    """One raw row: its fields, its position in its split and where it came from."""

    where: str
    index: int
    data: dict[str, Any]


@dataclass
class Source:
    """Named splits, each loaded when first asked for.

    ``named`` is False for one unnamed collection (a single file, generated problems): its
    only split is :data:`SINGLE`.
    """

    label: str
    loaders: dict[str, Callable[[], list[Row]]]
    named: bool = True
    _cache: dict[str, list[Row]] = field(default_factory=dict, repr=False)

    def rows(self, split: str) -> list[Row]:
        """The rows of ``split`` (read once, then cached)."""
        if split not in self.loaders:
            raise UserError(f"{self.label}: no split '{split}' (splits: "
                            + ", ".join(self.loaders) + ")")
        if split not in self._cache:
            self._cache[split] = self.loaders[split]()
        return self._cache[split]


def read_jsonl(path: Path) -> list[Row]:
    """Every JSON object of a JSONL file; blank lines are skipped, anything else is an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from e
    rows: list[Row] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") \
                from e
        if not isinstance(data, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object, got "
                            f"{type(data).__name__}")
        rows.append(Row(f"{path}:{lineno}", len(rows), data))
    if not rows:
        raise UserError(f"{path}: empty file (no JSON rows)")
    return rows


def read_parquet(paths: list[Path]) -> list[Row]:
    """Rows of one or more parquet shards, in order."""
    import pyarrow.parquet as pq

    rows: list[Row] = []
    for path in paths:
        for i, data in enumerate(pq.read_table(path).to_pylist(), start=1):
            rows.append(Row(f"{path}: row {i}", len(rows), data))
    if not rows:
        raise UserError(f"{paths[0]}: empty file (no rows)")
    return rows


def _parquet_splits(folder: Path, hub_config: Optional[str]) -> dict[str, list[Path]]:
    """Parquet shards of a hub-style folder grouped by split (the file name before '-')."""
    files = sorted(folder.rglob("*.parquet"))
    if hub_config:
        in_config = [p for p in files if hub_config in p.relative_to(folder).parts[:-1]]
        files = in_config or files
    groups: dict[str, list[Path]] = defaultdict(list)
    for p in files:
        groups[p.stem.split("-")[0]].append(p)
    for split, paths in groups.items():
        parents = sorted({str(p.parent) for p in paths})
        if len(parents) > 1:
            raise UserError(f"data.path={folder}: split '{split}' is in several folders ("
                            + ", ".join(parents) + "); set data.hub_config to one of them")
    return dict(groups)


def local_source(path_text: str, hub_config: Optional[str]) -> Source:
    """A local folder or single file (relative paths are relative to the current directory)."""
    path = Path(path_text).expanduser()
    if not path.exists():
        raise UserError(f"data.path={path_text}: no such file or folder "
                        f"(looked at {path.absolute()})")
    if path.is_file():
        readers = {".jsonl": lambda: read_jsonl(path), ".parquet": lambda: read_parquet([path])}
        if path.suffix not in readers:
            raise UserError(f"data.path={path_text}: expected a .jsonl or .parquet file "
                            "or a folder of them")
        return Source(str(path), {SINGLE: readers[path.suffix]}, named=False)
    jsonl = {p.stem: p for p in sorted(path.glob("*.jsonl"))}
    if jsonl:
        return Source(str(path), {s: (lambda p=p: read_jsonl(p)) for s, p in jsonl.items()})
    shards = _parquet_splits(path, hub_config)
    if shards:
        return Source(str(path), {s: (lambda ps=ps: read_parquet(ps)) for s, ps in shards.items()})
    raise UserError(f"data.path={path_text}: folder holds no .jsonl or .parquet files")


def _hub_error(hub_id: str, hub_config: Optional[str], e: Exception) -> UserError:
    first = (str(e).strip().splitlines() or [""])[0]
    return UserError(f"data.hub_id={hub_id} (config {hub_config}): cannot be loaded "
                     f"({type(e).__name__}: {first}); set data.path to a local copy")


def hub_source(hub_id: str, hub_config: Optional[str]) -> Source:
    """A hub dataset; splits are listed up front and each is downloaded when first read."""
    import datasets

    try:
        names = datasets.get_dataset_split_names(hub_id, hub_config)
    except Exception as e:  # network, unknown id or config: all user-facing here
        raise _hub_error(hub_id, hub_config, e) from e

    def load(split: str) -> list[Row]:
        try:
            ds = datasets.load_dataset(hub_id, hub_config, split=split)
        except Exception as e:
            raise _hub_error(hub_id, hub_config, e) from e
        return [Row(f"{hub_id}[{split}] row {i + 1}", i, dict(r)) for i, r in enumerate(ds)]

    return Source(hub_id, {name: (lambda n=name: load(n)) for name in names})


def rows_source(label: str, rows: list[dict[str, Any]]) -> Source:
    """An in-memory, unnamed collection (generated problems)."""
    wrapped = [Row(f"{label} row {i + 1}", i, r) for i, r in enumerate(rows)]
    return Source(label, {SINGLE: lambda: wrapped}, named=False)

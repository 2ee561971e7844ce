"""The files of a `grpo sample` run, written so that a crash or Ctrl-C loses at most the
problem being sampled and a rerun picks up where it stopped.

    OUT               kept rows, one JSON object a line (the rows grpo sft / data=jsonl read)
    OUT.done.jsonl    line 1: the settings; then one line per finished problem (its id, every
                      sample's total and verdict, the kept totals)
    OUT.summary.json  the summary of every finished problem, rewritten at the end

Per problem, its kept rows are appended (flushed and fsynced) before its done line, so a
problem is done only once its rows are on disk. On a rerun (`Store.open`):
- the settings line must match this run's (else one error line names the first key that
  differs: a rerun with another rule would mix two selections in one file);
- a last line cut by a crash is dropped; a malformed line elsewhere is an error (file:line);
- kept rows of a problem without a done line (a crash between the two appends) are removed
  (OUT is rewritten atomically), and the done problems are skipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from grpo_cli.errors import UserError


def done_path(out: Path) -> Path:
    return out.with_name(out.name + ".done.jsonl")


def summary_path(out: Path) -> Path:
    return out.with_name(out.name + ".summary.json")


def _read_lines(path: Path) -> list[dict]:
    """The JSON rows of `path`; a last line without its newline (a cut write) is dropped."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1]:  # no final newline: the write was cut
        lines = lines[:-1]
    rows = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{lineno}: malformed JSON ({exc.msg}); it was not written "
                            "by grpo sample, or was edited: choose another sample.out") from None
    return rows


def _was_cut(path: Path) -> bool:
    text = path.read_text(encoding="utf-8")
    return bool(text) and not text.endswith("\n")


def _append(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


def _rewrite(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                   encoding="utf-8")
    os.replace(tmp, path)


class Store:
    """The kept file and the done file of one sampling run."""

    def __init__(self, out: Path, settings: dict[str, Any], done: list[dict]):
        self.out, self.settings, self.done = out, settings, done

    @classmethod
    def open(cls, out: Path, settings: dict[str, Any]) -> "Store":
        """A fresh store, or the one a previous run left (checked and repaired)."""
        done_file = done_path(out)
        if not done_file.is_file():
            if out.exists():
                raise UserError(f"sample.out={out} already exists and is not a grpo sample "
                                f"output (no {done_file.name} beside it); choose another file")
            out.parent.mkdir(parents=True, exist_ok=True)
            return cls(out, settings, [])
        rows = _read_lines(done_file)
        if _was_cut(done_file):
            _rewrite(done_file, rows)
        old = rows[0].get("settings") if rows else None
        if not isinstance(old, dict):
            raise UserError(f"{done_file}:1: no settings line; choose another sample.out")
        for key in settings:
            if old.get(key) != settings[key]:
                raise UserError(f"sample.out={out} was started with {key}={old.get(key)} and "
                                f"this run has {key}={settings[key]}; rerun with the same "
                                "settings to resume it, or choose another sample.out")
        done = rows[1:]
        ids = {d["id"] for d in done}
        kept = _read_lines(out) if out.is_file() else []
        finished = [r for r in kept if r.get("problem_id") in ids]
        if len(finished) != len(kept) or (out.is_file() and _was_cut(out)):
            _rewrite(out, finished)
        return cls(out, settings, done)

    @property
    def done_ids(self) -> set[str]:
        return {d["id"] for d in self.done}

    def add(self, kept_rows: list[dict], done_row: dict) -> None:
        """One finished problem: its kept rows, then its done line."""
        if not done_path(self.out).is_file():
            _rewrite(done_path(self.out), [{"settings": self.settings}])
        _append(self.out, kept_rows)
        _append(done_path(self.out), [done_row])
        self.done.append(done_row)

    def discard(self) -> None:
        """Remove every file of the run (nothing was kept: nothing worth resuming)."""
        for path in (self.out, done_path(self.out), summary_path(self.out)):
            path.unlink(missing_ok=True)

    def write_summary(self, summary: dict) -> Path:
        path = summary_path(self.out)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

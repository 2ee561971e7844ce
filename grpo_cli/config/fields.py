"""Field helpers of the config schemas: a field's allowed values, range, command and resume
rule, kept as its dataclass metadata (schema.py's module docstring says how each is read)."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def choice(default: Any, choices: list, help: str = "", only: str | None = None,
           resume_fixed: bool = False) -> Any:
    return field(default=default, metadata={"choices": choices, "help": help, "only": only,
                                            "resume_fixed": resume_fixed})


def bounded(default: Any, *, lo: float | None = None, hi: float | None = None,
            gt: float | None = None, only: str | None = None, resume_fixed: bool = False) -> Any:
    return field(default=default, metadata={"min": lo, "max": hi, "gt": gt, "only": only,
                                            "resume_fixed": resume_fixed})


def only(command: str, **kwargs: Any) -> Any:
    """A field read by some commands only ("train", "eval", "sample" or a comma list such as
    "eval,sample"), or by "both" (every command) under such a one."""
    return field(metadata={"only": command}, **kwargs)


def resume_fixed(**kwargs: Any) -> Any:
    """A field a resumed run must keep (see `resume_fixed_keys`)."""
    return field(metadata={"resume_fixed": True}, **kwargs)

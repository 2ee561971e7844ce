"""`grpo recipes`: list the recipes with the header every recipe starts with."""

from __future__ import annotations

import re
from pathlib import Path

from grpo_cli.config.compose import recipe_dir

HEADER_KEYS = ("purpose", "command", "hardware", "expected")


def read_header(path: Path) -> dict[str, str]:
    """The `# key: value` lines at the top of a recipe file."""
    header: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^#\s*(\w+):\s*(.+)$", line)
        if m and m.group(1) in HEADER_KEYS:
            header[m.group(1)] = m.group(2).strip()
        elif line.strip() and not line.startswith("#"):
            break
    return header


def list_recipes() -> dict[str, dict[str, str]]:
    return {p.stem: read_header(p) for p in sorted(recipe_dir().glob("*.yaml"))}


def format_recipes() -> str:
    out = []
    for name, header in list_recipes().items():
        out.append(name)
        for key in HEADER_KEYS:
            out.append(f"  {key + ':':10s} {header.get(key, '-')}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"

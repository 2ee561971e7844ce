"""scripts/compare_trl_losses.py: our loss and gradient equal TRL's own `_compute_loss` on the
variants both implement (skipped where trl is not installed: it is the `bench` extra)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "compare_trl_losses.py"


@pytest.mark.slow
def test_our_losses_match_trls(capsys, monkeypatch):
    pytest.importorskip("trl.trainer.grpo_trainer")
    spec = importlib.util.spec_from_file_location("compare_trl_losses", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    assert module.main() == 0, capsys.readouterr().out

"""QLoRA on CUDA through the real CLI: NF4 base, bf16 compute, gradient checkpointing.

Run on a GPU machine with `pytest -m gpu`; skipped elsewhere.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_run import base_args

HERE = Path(__file__).resolve().parents[1] / "cli"


@pytest.mark.gpu
def test_qlora_trains_on_cuda(tiny_qwen2_path, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = [a for a in base_args(tiny_qwen2_path, out, 3) if not a.startswith("model.dtype")]
    res = subprocess.run([sys.executable, "-m", "grpo_cli.cli", "train", *args,
                          "model.device=cuda", "model.dtype=bf16", "model.quantization=nf4",
                          "model.compute_dtype=bf16", "model.gradient_checkpointing=true",
                          "algo.beta=0.04", "optim=paged_adamw_8bit"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()
            if "reward/mean" in x]
    assert len(rows) == 3
    for key in ("loss", "kl", "grad_norm", "mem/peak_gb"):
        assert math.isfinite(rows[-1][key]), key
    assert rows[-1]["mem/peak_gb"] > 0

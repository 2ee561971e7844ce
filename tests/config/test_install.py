"""A plain (non-editable) install ships the configs and recipes: `grpo` works from anywhere."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_install_runs_from_another_directory(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], capture_output=True, text=True,
                             check=True).stdout.strip()
    # The dependencies come from this environment (no downloads); grpo itself is installed
    # from the repository as a wheel, not as a link to the source tree.
    deps = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    Path(purelib, "parent_env.pth").write_text("\n".join(deps) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    res = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(REPO)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    grpo = venv / "bin" / "grpo"
    where = subprocess.run([str(py), "-c", "import grpo_cli; print(grpo_cli.__file__)"],
                           capture_output=True, text=True, cwd=elsewhere, env=env)
    assert str(venv) in where.stdout, where.stdout + where.stderr
    listing = subprocess.run([str(grpo), "recipes"], capture_output=True, text=True,
                             cwd=elsewhere, env=env)
    assert listing.returncode == 0, listing.stderr
    for name in ("quickstart", "gsm8k_qwen7b", "math_qwen7b", "gsm8k_qwen1_5b"):
        assert name in listing.stdout
    job = subprocess.run([str(grpo), "train", "+recipe=gsm8k_qwen7b", "--cfg", "job"],
                         capture_output=True, text=True, cwd=elsewhere, env=env)
    assert job.returncode == 0 and "Qwen/Qwen2.5-7B-Instruct" in job.stdout, job.stderr

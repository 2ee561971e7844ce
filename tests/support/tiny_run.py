"""The fast CPU config the CLI tests train with (2 prompts x G=4, 12 new tokens, a toy
reward), and the subprocess helpers around it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

FAULT_CLI = Path(__file__).resolve().parent / "fault_cli.py"


def base_args(model: Path, out: Path, steps: int, *extra: str,
              reward: str = "toy_rewards:digit_share") -> list[str]:
    return [
        f"model.name_or_path={model}", "model.dtype=fp32", "data=arith",
        "data.arith.num_examples=200", f"trainer.output_dir={out}",
        f"trainer.max_steps={steps}", "trainer.prompts_per_step=2", "trainer.micro_batch_size=4",
        "algo.num_generations=4", "rollout.max_new_tokens=12", "logger.wandb.mode=disabled",
        "logger.console=plain", "logger.plot_at_end=false", "trainer.save_every=0",
        f"+reward.components.digits.fn={reward}", "~reward.components.format", *extra]


def train_command(fault: str | None = None) -> list[str]:
    """`grpo train` as a subprocess command: the real CLI, or with a fault spec the same CLI
    behind fault_cli.py, which injects the faults of GRPO_FAULT (run_env sets it)."""
    if fault:
        return [sys.executable, str(FAULT_CLI), "train"]
    return [sys.executable, "-m", "grpo_cli.cli", "train"]


def run_env(folder: Path, fault: str | None = None) -> dict:
    """The environment for a `grpo train` subprocess: `folder` importable (its toy rewards),
    one thread (a tiny model gains nothing from two, and spinning threads slow a busy
    machine), W&B off, and GRPO_FAULT=fault when given (read by fault_cli.py alone)."""
    env = {**os.environ,
           "PYTHONPATH": f"{folder}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    env.pop("GRPO_FAULT", None)
    if fault:
        env["GRPO_FAULT"] = fault
    return env


def metrics(run: Path) -> list[dict]:
    """The per-step rows of a run's metrics.jsonl."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
            if line.strip() and "reward/mean" in line]


def torchrun_command(nproc: int, *launcher: str, command: str = "train") -> list[str]:
    """`torchrun --nproc_per_node=N [launcher options] fault_cli.py COMMAND`: the real CLI in
    N processes (fault_cli.py reads GRPO_FAULT and GRPO_WEIGHT_LOG, fault_hooks.py). Without
    launcher options, --standalone: a rendezvous on a free local port."""
    return [sys.executable, "-m", "torch.distributed.run", *(launcher or ("--standalone",)),
            f"--nproc_per_node={nproc}", str(FAULT_CLI), command]


def signal_after_first_step(args: list[str], out: Path, env: dict, sig: int,
                            wait_s: float, command: list[str] | None = None
                            ) -> subprocess.CompletedProcess:
    """Start `grpo train ARGS` (or `command` ARGS), send `sig` once step 1 is logged (or after
    wait_s, or when the run has ended), and wait for it to exit."""
    proc = subprocess.Popen([*(command or train_command()), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + wait_s
    while time.time() < deadline and proc.poll() is None:
        if (out / "metrics.jsonl").is_file() and metrics(out):
            break
        time.sleep(0.2)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def resume_hint(stderr: str) -> str:
    """The command a stopped run printed after `resume with: ` (exactly one such line)."""
    lines = [line for line in stderr.splitlines() if line.startswith("resume with: ")]
    assert len(lines) == 1, stderr[-2000:]
    return lines[0].removeprefix("resume with: ")


def assert_one_error_line(res: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, stderr is exactly one line `error: ...` naming `needles`, no traceback."""
    err = res.stderr.strip()
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-3000:]
    assert err.startswith("error: ") and "\n" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err

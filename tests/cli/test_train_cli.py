"""The training loop through the real `grpo train` command, on a tiny model on CPU."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import in_process
import pytest
import tiny_run
from safetensors.torch import load_file
from tiny_run import base_args

HERE = Path(__file__).resolve().parent


def run_env() -> dict:
    return tiny_run.run_env(HERE)


def grpo(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = run_env()
    return subprocess.run([sys.executable, "-m", "grpo_cli.cli", "train", *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


metrics = tiny_run.metrics


def test_train_runs_and_changes_lora(tiny_llama_path, tmp_path):
    out = tmp_path / "run"
    res = grpo(*base_args(tiny_llama_path, out, 3, "algo.beta=0.04", "optim.lr=1e-3",
                          "trainer.save_every=1", "trainer.keep_last=1"))
    assert res.returncode == 0, res.stderr[-3000:]
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in ("reward/mean", "reward/std", "loss", "kl", "clip_ratio", "entropy", "grad_norm",
                "completion_len/mean", "completion_len/clipped_frac", "lr", "time/step_s",
                "time/rollout_s", "time/train_s", "tokens_per_s", "mem/peak_gb",
                "frac_zero_std", "rewards/digits/mean", "rewards/correctness/mean", "accuracy"):
        assert key in rows[-1], key
        assert rows[-1][key] is not None and math.isfinite(rows[-1][key]), key
    assert (out / "config.yaml").is_file()
    final = out / "checkpoints" / "final"
    adapter = load_file(str(final / "policy" / "adapter_model.safetensors"))
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and any(float(v.abs().max()) > 0 for v in lora_b), "LoRA B stayed zero"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["final", "step-3"]
    assert list((out / "samples").glob("step-*.jsonl"))


def _mean(rows: list[dict], key: str, sl: slice) -> float:
    vals = [r[key] for r in rows[sl]]
    return sum(vals) / len(vals)


@pytest.mark.slow
def test_learnable_reward_rises_and_not_with_lr0(tiny_wide_llama_path, tmp_path):
    common = ["algo.beta=0.0", "trainer.prompts_per_step=4", "trainer.micro_batch_size=32",
              "algo.num_generations=8", "algo.loss_agg=token_mean",
              "~reward.components.correctness", "rollout.max_new_tokens=8"]
    learn, still = tmp_path / "learn", tmp_path / "still"
    res = grpo(*base_args(tiny_wide_llama_path, learn, 20, "optim.lr=2e-2", *common))
    assert res.returncode == 0, res.stderr[-3000:]
    res = grpo(*base_args(tiny_wide_llama_path, still, 20, "optim.lr=0", *common))
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = metrics(learn), metrics(still)
    start, end = _mean(a, "reward/mean", slice(0, 5)), _mean(a, "reward/mean", slice(-5, None))
    s0, s1 = _mean(b, "reward/mean", slice(0, 5)), _mean(b, "reward/mean", slice(-5, None))
    print(f"lr=2e-2: reward {start:.3f} -> {end:.3f}; lr=0: reward {s0:.3f} -> {s1:.3f}")
    assert end > start + 0.15, (start, end)
    assert abs(s1 - s0) < 0.05, (s0, s1)


def test_resume_gives_the_same_steps(tiny_llama_path, tmp_path):
    keys = ("reward/mean", "loss", "kl", "grad_norm", "completion_len/mean", "lr")
    # A warmup that spans the resume point; a decaying schedule would depend on max_steps.
    extra = ("algo.beta=0.04", "optim.lr=1e-2", "trainer.save_every=3", "optim.warmup_steps=4")
    straight, split = tmp_path / "straight", tmp_path / "split"
    res = grpo(*base_args(tiny_llama_path, straight, 6, *extra))
    assert res.returncode == 0, res.stderr[-3000:]
    res = grpo(*base_args(tiny_llama_path, split, 3, *extra))
    assert res.returncode == 0, res.stderr[-3000:]
    res = grpo(*base_args(tiny_llama_path, split, 6, *extra, "trainer.resume=auto"))
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = metrics(straight), metrics(split)
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(a[3:], b[3:]):
        for k in keys:
            assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-7), (ra["step"], k)


def _last_step(out: Path) -> int:
    try:  # the resumed run rewrites metrics.jsonl as it starts
        rows = metrics(out)
    except (ValueError, OSError):
        return 0
    return rows[-1]["step"] if rows else 0


def test_sigint_leaves_a_resumable_checkpoint_and_the_hint_resumes_it(tiny_llama_path, tmp_path):
    """The printed hint, run as a shell command, resumes the run; stopped again, it prints
    the same hint (one trainer.resume=auto, no double space)."""
    out = tmp_path / "run"
    env = run_env()
    res = tiny_run.signal_after_first_step(
        base_args(tiny_llama_path, out, 500, "trainer.cpu_threads=1",
                  "data.system_prompt=Answer briefly."), out, env, signal.SIGINT, wait_s=180)
    err = res.stderr
    assert res.returncode == 130, err[-2000:]
    assert "cpu threads: 1 (trainer.cpu_threads)" in err  # said at start, and applied
    hint = tiny_run.resume_hint(err)
    assert hint.count("trainer.resume=auto") == 1 and "  " not in hint
    ckpts = [p for p in (out / "checkpoints").iterdir() if p.name.startswith("step-")]
    assert len(ckpts) == 1 and (ckpts[0] / "meta.json").is_file()
    step = json.loads((ckpts[0] / "meta.json").read_text())["step"]
    proc = subprocess.Popen(["bash", "-c", f"exec {hint}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and _last_step(out) <= step:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert f"resumed from {ckpts[0]} at step {step}" in stdout + err
    assert [r["step"] for r in metrics(out)] == list(range(1, metrics(out)[-1]["step"] + 1))
    assert tiny_run.resume_hint(err) == hint


def test_quiet_run_warns_only_and_writes_readable_samples(tiny_llama_path, tmp_path):
    """logger.console=quiet prints warnings only (here: tag_count under the hash template);
    samples carry the gold answer and the prompt once per group; no kl without a reference."""
    out = tmp_path / "run"
    res = grpo(*base_args(tiny_llama_path, out, 1, "logger.console=quiet", "algo.beta=0.0",
                          "+reward.components.tags.fn=tag_count"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout == ""
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "reward.components.tags (tag_count)" in lines[0], res.stderr
    rows = [json.loads(line) for line in (out / "samples" / "step-1.jsonl").open()]
    assert [("prompt" in r) for r in rows] == [True, False, False, False] * 2
    assert [r["group"] for r in rows] == [0] * 4 + [1] * 4 and all(r["gold"] for r in rows)
    assert "kl" not in metrics(out)[0]


def test_bad_model_path_is_one_line(tmp_path, capsys):
    args = base_args(tmp_path / "no-such-model", tmp_path / "run", 1)
    res = in_process.grpo(capsys, "train", *args)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "no-such-model" in res.stderr, res.stderr

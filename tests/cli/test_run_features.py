"""Run features through the real CLI on a tiny model: eval during training, grpo eval on the
checkpoint, export, the GRPO variants (DAPO, RLOO, adaptive KL), W&B offline."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import in_process
import pytest
import yaml
from test_train_cli import base_args, grpo, metrics, run_env


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grpo_cli.cli", *args], capture_output=True,
                          text=True, env=run_env(), timeout=600)


@pytest.fixture(scope="module")
def trained_run(tiny_llama_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    res = grpo(*base_args(tiny_llama_path, out, 2, "trainer.eval_every=1", "eval.limit=4",
                          "eval.max_new_tokens=12", "algo.beta=0.04"))
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_eval_during_training_keeps_best(trained_run):
    lines = [json.loads(x) for x in (trained_run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in lines if "eval/accuracy" in r]
    assert [r["step"] for r in lines] == [1, 2]  # one line per step, eval steps too
    assert len(evals) >= 2 and all(0.0 <= r["eval/accuracy"] <= 1.0 for r in evals)
    best = trained_run / "checkpoints" / "best"
    assert (best / "meta.json").is_file() and (best / "policy").is_dir()


def test_grpo_eval_on_checkpoint_uses_its_config(trained_run):
    ckpt = trained_run / "checkpoints" / "final"
    res = cli("eval", str(ckpt), "eval.limit=3", "eval.num_samples=2", "eval.temperature=0.7",
              "eval.max_new_tokens=10")
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((trained_run / "eval" / "arith" / "report.json").read_text())
    assert report["dataset"] == "arith" and report["num_examples"] == 3
    assert report["num_samples"] == 2
    # eval.* sets the generation, not the checkpoint's training rollout (12 tokens)
    assert report["config"]["max_new_tokens"] == 10 and report["config"]["temperature"] == 0.7
    for key in ("accuracy", "accuracy_strict", "accuracy_flexible", "pass@1", "pass@2",
                "maj@1", "maj@2", "format_rate", "mean_completion_tokens"):
        assert key in report, key
    assert (trained_run / "eval" / "arith" / "samples.jsonl").is_file()


def test_eval_errors_are_one_line(tmp_path, capsys):
    for args, needle in ((["checkpoint=" + str(tmp_path / "nope")], "does not exist"),
                         ([f"checkpoint={tmp_path}"], "config.yaml")):
        res = in_process.grpo(capsys, "eval", *args)
        assert res.returncode == 2, res.stderr
        assert res.stderr.startswith("error: ") and needle in res.stderr
        assert res.stderr.strip().count("\n") == 0


@pytest.mark.parametrize("dtype", [None, "bf16"])
def test_export_writes_a_loadable_model(trained_run, tmp_path, dtype):
    res = cli("export", f"checkpoint={trained_run / 'checkpoints' / 'final'}",
              f"out={tmp_path / 'merged'}", *([f"dtype={dtype}"] if dtype else []))
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"merged model written to {tmp_path / 'merged'} ({dtype or 'fp32'})" in res.stdout
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not any("lora" in n for n, _ in model.named_parameters())
    saved = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert saved.get("dtype", saved.get("torch_dtype")) == (
        "bfloat16" if dtype else "float32")  # the default is the exact fp32 merge


@pytest.mark.parametrize("variant", [
    ["algo=dapo"],
    ["algo=rloo"],
    ["algo=dr_grpo"],
    ["algo.kl_target=0.01", "algo.beta=0.1"],
    ["algo.num_iterations=2", "trainer.grad_accum_steps=1", "algo.scale_rewards=batch"],
])
def test_variants_run_with_finite_metrics(tiny_llama_path, tmp_path, variant):
    out = tmp_path / "run"
    res = grpo(*base_args(tiny_llama_path, out, 2, *variant))
    assert res.returncode == 0, res.stderr[-3000:]
    algo = yaml.safe_load((out / "config.yaml").read_text())["algo"]
    measures_kl = algo["beta"] > 0 or algo["kl_target"] is not None
    for row in metrics(out):
        # Token means are absent from a step whose loss counted no token (DAPO masks the
        # truncated completions, and a tiny random model truncates them all); kl is logged
        # only when the reference policy ran.
        counted = "clip_ratio" in row
        keys = ("loss", "reward/mean", "grad_norm") + (("clip_ratio",) if counted else ())
        for key in keys + (("kl",) if counted and measures_kl else ()):
            assert row[key] is not None and math.isfinite(row[key]), (variant, key)
        assert ("kl" in row) == (counted and measures_kl), variant


def test_wandb_offline_run_is_written(tiny_llama_path, tmp_path):
    out = tmp_path / "run"
    args = [a for a in base_args(tiny_llama_path, out, 2) if not a.startswith("logger.wandb")]
    res = grpo(*args, "logger.wandb.mode=offline", "logger.completions_every=1")
    assert res.returncode == 0, res.stderr[-3000:]
    runs = list((out / "wandb").rglob("*.wandb"))
    assert runs, "no offline W&B run file"

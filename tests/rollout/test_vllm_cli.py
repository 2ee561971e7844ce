"""rollout.engine=vllm through the real commands: `grpo eval` of a trained LoRA checkpoint
gives what the hf engine gives, and Ctrl-C during `grpo train` leaves a checkpoint that
trainer.resume=auto continues. Needs vLLM: run in the vLLM venv (README, "Rollout engines").
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from grpo_cli.config.vllm_rules import vllm_installed

pytestmark = [pytest.mark.vllm,
              pytest.mark.skipif(not vllm_installed(), reason="vLLM is not installed here "
                                 "(scripts/install_vllm_cpu.sh builds a venv with it)")]
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

CLI_TESTS = Path(__file__).resolve().parents[1] / "cli"  # toy_rewards
VLLM_ARGS = ("rollout.vllm.cpu_kv_cache_gib=0.25", "rollout.vllm.max_model_len=512")
WRONG = "-777"  # a gold answer no completion of the tiny model gives


def _eval(capsys, out: Path, *args: str) -> tuple[dict, list[dict]]:
    import in_process

    res = in_process.grpo(capsys, "eval", *args, f"eval.out={out}", "logger.console=quiet")
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return json.loads((out / "report.json").read_text()), rows


def _train_checkpoint(capsys, model: Path, out: Path) -> Path:
    """30 steps of grpo train (hf engine) with a large learning rate: the trained adapter
    moves the greedy completions (the toy reward pulls them towards digits)."""
    import in_process
    import tiny_run

    args = tiny_run.base_args(model, out, 30, "optim.lr=2e-2", "algo.beta=0.0",
                              "model.lora.r=8", "trainer.prompts_per_step=4",
                              "algo.num_generations=8", "trainer.micro_batch_size=32",
                              "rollout.max_new_tokens=6", "logger.console=quiet")
    res = in_process.grpo(capsys, "train", *args)
    assert res.returncode == 0, res.stderr[-2000:]
    return out / "checkpoints" / "final"


def _graded_set(rows: list[dict], folder: Path) -> float:
    """A test.jsonl of `rows`' questions whose gold is what the greedy completion answers
    (flexible extraction) for every other question and WRONG for the rest; returns the
    accuracy a run that reproduces those completions must report."""
    folder.mkdir()
    golds = [r["pred_flexible"][0] if i % 2 == 0 and r["pred_flexible"][0] is not None
             else WRONG for i, r in enumerate(rows)]
    with (folder / "test.jsonl").open("w") as f:
        for row, gold in zip(rows, golds):
            f.write(json.dumps({"question": row["question"], "answer": gold}) + "\n")
    return sum(g != WRONG for g in golds) / len(golds)


def test_eval_with_vllm_equals_hf_on_a_trained_lora_checkpoint(tiny_head32_path, tmp_path,
                                                                capsys, monkeypatch):
    """Same accuracy (strict and flexible), format rate, lengths and per-problem greedy
    completions from both engines, on a question set whose golds give a known accuracy;
    the base model answers otherwise, so the adapter reached vLLM."""
    monkeypatch.syspath_prepend(str(CLI_TESTS))
    ckpt = _train_checkpoint(capsys, tiny_head32_path, tmp_path / "run")
    common = [f"checkpoint={ckpt}", "eval.max_new_tokens=6", "eval.batch_size=4"]
    _, arith_rows = _eval(capsys, tmp_path / "arith", *common, "eval.limit=12")
    expected = _graded_set(arith_rows, tmp_path / "set")
    assert 0 < expected <= 0.5
    graded = [*common, "data=jsonl", f"data.path={tmp_path / 'set'}", "data.shuffle=false"]
    hf, hf_rows = _eval(capsys, tmp_path / "hf", *graded, "rollout.engine=hf")
    vl, vl_rows = _eval(capsys, tmp_path / "vllm", *graded, "rollout.engine=vllm", *VLLM_ARGS)
    assert (hf["config"]["engine"], vl["config"]["engine"]) == ("hf", "vllm")
    assert [r["question"] for r in vl_rows] == [r["question"] for r in arith_rows]
    assert [r["completions"] for r in vl_rows] == [r["completions"] for r in hf_rows]
    assert [r["tokens"] for r in vl_rows] == [r["tokens"] for r in hf_rows]
    assert hf["num_examples"] == vl["num_examples"] == len(arith_rows)
    assert hf["accuracy"] == vl["accuracy"] == pytest.approx(expected)
    for key in ("accuracy_strict", "format_rate", "mean_completion_tokens", "truncated_rate"):
        assert hf[key] == vl[key], key
    _, base_rows = _eval(capsys, tmp_path / "base", *graded[1:], "model.dtype=fp32",
                         f"model.name_or_path={tiny_head32_path}")
    assert [r["completions"] for r in base_rows] != [r["completions"] for r in vl_rows]


def test_eval_with_vllm_of_an_adapter_whose_rank_is_not_model_lora_r(tiny_head32_path,
                                                                     tmp_path, capsys):
    """model.adapter_path of rank 32 under the default model.lora.r=16: vLLM reserves the
    adapter's rank (it refused the adapter with a traceback before) and greedy equals hf."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_head32_path),
                   LoraConfig(r=32, lora_alpha=64, target_modules="all-linear",
                              init_lora_weights=False)).save_pretrained(adapter)
    common = [f"model.name_or_path={tiny_head32_path}", f"model.adapter_path={adapter}",
              "model.dtype=fp32", "data=arith", "eval.limit=4", "eval.max_new_tokens=6"]
    _, hf_rows = _eval(capsys, tmp_path / "hf", *common)
    vl, vl_rows = _eval(capsys, tmp_path / "vllm", *common, "rollout.engine=vllm", *VLLM_ARGS)
    assert vl["config"]["engine"] == "vllm"
    assert [r["completions"] for r in vl_rows] == [r["completions"] for r in hf_rows]


def test_sigint_during_vllm_training_leaves_a_checkpoint_that_resume_continues(
        tiny_head32_path, tmp_path, capsys, monkeypatch):
    """SIGINT once step 1 is logged: the step in flight finishes, is saved, the run exits
    130 with the resume hint; trainer.resume=auto continues from that step with vLLM."""
    import in_process
    import tiny_run

    monkeypatch.syspath_prepend(str(CLI_TESTS))
    out = tmp_path / "run"
    args = tiny_run.base_args(tiny_head32_path, out, 500, "rollout.engine=vllm",
                              "model.lora.r=8", *VLLM_ARGS)
    res = tiny_run.signal_after_first_step(args, out, tiny_run.run_env(CLI_TESTS),
                                           signal.SIGINT, wait_s=300)
    assert res.returncode == 130, res.stderr[-2000:]
    hint = tiny_run.resume_hint(res.stderr)
    assert "rollout.engine=vllm" in hint and hint.endswith(" trainer.resume=auto")
    ckpts = [p for p in (out / "checkpoints").iterdir() if p.name.startswith("step-")]
    assert len(ckpts) == 1 and (ckpts[0] / "policy" / "adapter_model.safetensors").is_file()
    step = json.loads((ckpts[0] / "meta.json").read_text())["step"]
    assert [r["step"] for r in tiny_run.metrics(out)] == list(range(1, step + 1))
    again = in_process.grpo(capsys, "train", *args, f"trainer.max_steps={step + 2}",
                            "trainer.resume=auto")
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resumed from {ckpts[0]} at step {step}" in again.stdout + again.stderr
    assert [r["step"] for r in tiny_run.metrics(out)] == list(range(1, step + 3))
    assert (out / "checkpoints" / "final" / "meta.json").is_file()

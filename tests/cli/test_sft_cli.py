"""`grpo sft` through the real CLI (in process) on a tiny model: the options take effect,
checkpoints resume and load in grpo train / grpo eval, and the whole R1 chain
sft -> train -> sample -> sft -> eval runs, each stage reading the previous one's output."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import in_process
import tiny_run
import torch
from safetensors.torch import load_file
from test_sample_cli import read
from test_train_cli import base_args
from tiny import make_tiny_model


def traces(path: Path, n: int = 12) -> Path:
    rows = [{"id": f"t{i}", "prompt": [{"role": "user", "content": f"Compute {i} + 1."}],
             "completion": f"{i} + 1 = {i + 1}\n#### {i + 1}", "question": f"Compute {i} + 1.",
             "answer": str(i + 1)} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sft_args(model: Path, data: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [f"model.name_or_path={model}", "model.dtype=fp32", "data=jsonl",
            f"data.path={data}", "data.test_size=0.25", f"trainer.output_dir={out}",
            f"trainer.max_steps={steps}", "sft.batch_size=3", "trainer.micro_batch_size=2",
            "optim.lr=1e-3", "trainer.save_every=2", "logger.wandb.mode=disabled",
            "logger.console=plain", *extra]


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]


def lora_b(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(folder / "adapter_model.safetensors")).items()
            if "lora_B" in k}


def test_sft_trains_logs_and_checkpoints(tiny_llama_path, tmp_path, capsys):
    out = tmp_path / "sft"
    res = in_process.grpo(capsys, "sft", *sft_args(
        tiny_llama_path, traces(tmp_path / "t.jsonl"), out, 3, "sft.eval_every=2",
        "optim.scheduler=linear", "trainer.keep_last=1"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "sft: 9 train / 3 held-out rows" in res.stderr  # data.test_size=0.25 of 12
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in ("sft/loss", "lr", "grad_norm", "tokens_per_s", "mem/peak_gb", "time/step_s"):
        assert all(key in r for r in rows), key
    assert [r["lr"] for r in rows] == [1e-3 * (1 - s / 3) for s in range(3)]  # linear decay
    assert ["eval/loss" in r for r in rows] == [False, True, True]  # every 2 and at the end
    assert "| loss " in res.stdout and "| eval loss " in res.stdout
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["final", "step-2"]  # save_every=2, keep_last=1
    assert any(float(v.abs().max()) > 0 for v in lora_b(out / "checkpoints/final/policy")
               .values()), "LoRA B stayed zero"


def test_sft_resume_auto_continues(tiny_llama_path, tmp_path, capsys):
    data, out = traces(tmp_path / "t.jsonl"), tmp_path / "sft"
    assert in_process.grpo(capsys, "sft", *sft_args(tiny_llama_path, data, out, 2)
                           ).returncode == 0
    res = in_process.grpo(capsys, "sft", *sft_args(tiny_llama_path, data, out, 2))
    tiny_run.assert_one_error_line(res, "already holds a run")
    res = in_process.grpo(capsys, "sft", *sft_args(tiny_llama_path, data, out, 4,
                                                   "trainer.resume=auto"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed from" in res.stdout + res.stderr and "at step 2" in res.stdout + res.stderr
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4]


def test_bad_sft_input_is_one_line(tiny_llama_path, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n')
    res = in_process.grpo(capsys, "sft", *sft_args(tiny_llama_path, bad, tmp_path / "o", 1))
    tiny_run.assert_one_error_line(res, "bad.jsonl:2: missing field 'completion'")
    assert not (tmp_path / "o").exists()
    res = in_process.grpo(capsys, "sft", "data=arith", f"trainer.output_dir={tmp_path / 'o'}")
    tiny_run.assert_one_error_line(res, "grpo sft reads JSONL rows of prompt + completion")
    res = in_process.grpo(capsys, "sft", "algo.beta=0.1")
    tiny_run.assert_one_error_line(res, "algo.beta is read only by `grpo train`")


def chats(path: Path, n: int = 12) -> Path:
    rows = [{"id": f"c{i}", "messages": [
        {"role": "user", "content": f"Compute {i} + 1."},
        {"role": "assistant", "content": f"{i} + 1 = {i + 1}\n#### {i + 1}"},
        {"role": "user", "content": "And + 2?"},
        {"role": "assistant", "content": f"{i + 1} + 2 = {i + 3}\n#### {i + 3}"}]}
        for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_sft_on_messages_rows_packed(tiny_llama_path, tmp_path, capsys):
    out = tmp_path / "sft"
    res = in_process.grpo(capsys, "sft", *sft_args(
        tiny_llama_path, chats(tmp_path / "c.jsonl"), out, 2, "sft.packing=true",
        "sft.max_seq_len=128"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "sft: 9 train / 3 held-out rows" in res.stderr
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2] and "eval/loss" in rows[-1]
    assert (out / "checkpoints" / "final" / "policy").is_dir()


def test_messages_rows_on_a_model_without_a_chat_template(tmp_path, capsys):
    base = make_tiny_model(tmp_path / "base", with_chat_template=False)
    data = chats(tmp_path / "c.jsonl")
    res = in_process.grpo(capsys, "sft", *sft_args(base, data, tmp_path / "o", 1))
    tiny_run.assert_one_error_line(res, f"{data}: rows of 'messages'", "model.chat_template")
    assert not (tmp_path / "o").exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    res = in_process.grpo(capsys, "sft", *sft_args(base, bad, tmp_path / "o", 1))
    tiny_run.assert_one_error_line(res, "bad.jsonl:1: field 'messages' has no assistant turn")


def test_the_r1_chain_sft_train_sample_sft_eval(tiny_llama_path, tmp_path, capsys):
    # stage 1: SFT cold start on hand-written traces
    cold = tmp_path / "cold"
    res = in_process.grpo(capsys, "sft", *sft_args(tiny_llama_path, traces(tmp_path / "t.jsonl"),
                                                   cold, 2))
    assert res.returncode == 0, res.stderr[-3000:]
    cold_adapter = cold / "checkpoints" / "final" / "policy"
    # stage 2: GRPO from the SFT adapter (lr 0: it saves exactly the adapter it loaded)
    rl = tmp_path / "rl"
    res = in_process.grpo(capsys, "train", *base_args(
        tiny_llama_path, rl, 1, f"model.adapter_path={cold_adapter}", "optim.lr=0"))
    assert res.returncode == 0, res.stderr[-3000:]
    rl_ckpt = rl / "checkpoints" / "final"
    start, end = lora_b(cold_adapter), lora_b(rl_ckpt / "policy")
    assert start.keys() == end.keys() and all(torch.equal(start[k], end[k]) for k in start)
    # stage 3: rejection sampling from the RL checkpoint
    kept = tmp_path / "kept.jsonl"
    res = in_process.grpo(capsys, "sample", f"checkpoint={rl_ckpt}", "sample.limit=6",
                          "sample.num_samples=2", "eval.max_new_tokens=6", "sample.keep=best",
                          f"sample.out={kept}")
    assert res.returncode == 0, res.stderr[-3000:]
    # stage 4: SFT on the kept rows, continuing the RL adapter
    final = tmp_path / "sft2"
    res = in_process.grpo(capsys, "sft", *sft_args(
        tiny_llama_path, kept, final, 2, "data.test_size=0",
        f"model.adapter_path={rl_ckpt / 'policy'}"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"sft: {len(read(kept))} train / 0 held-out rows from {kept}" in res.stderr
    # eval of the last checkpoint
    ckpt, report_dir = final / "checkpoints" / "final", tmp_path / "eval"
    res = in_process.grpo(capsys, "eval", f"checkpoint={ckpt}", "data=arith",
                          "data.arith.num_examples=40", "eval.limit=2", "eval.max_new_tokens=4",
                          f"eval.out={report_dir}")
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((report_dir / "report.json").read_text())
    assert report["adapter_path"] == str(ckpt / "policy") and report["num_examples"] == 2


def test_ctrl_c_saves_a_checkpoint_and_resume_continues(tiny_llama_path, tmp_path):
    data, out = traces(tmp_path / "t.jsonl"), tmp_path / "sft"
    args = sft_args(tiny_llama_path, data, out, 300, "trainer.save_every=0")
    env = tiny_run.run_env(Path(__file__).resolve().parent)
    proc = subprocess.Popen([sys.executable, "-m", "grpo_cli.cli", "sft", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "metrics.jsonl").is_file() and metrics(out):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "stopped at step" in stderr and "trainer.resume=auto" in stderr
    saved = [p.name for p in (out / "checkpoints").iterdir()]
    assert len(saved) == 1 and saved[0].startswith("step-")
    step = int(saved[0].split("-")[1])
    assert 1 <= step < 300
    res = subprocess.run([sys.executable, "-m", "grpo_cli.cli", "sft", *args[:-1],
                          f"trainer.max_steps={step + 1}", "trainer.resume=auto"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [r["step"] for r in metrics(out)] == list(range(1, step + 2))


def test_sft_epochs_set_the_steps_and_plots_are_written(tiny_llama_path, tmp_path, capsys):
    out = tmp_path / "sft"
    args = [a for a in sft_args(tiny_llama_path, traces(tmp_path / "t.jsonl"), out, 1)
            if not a.startswith("trainer.max_steps=")]
    res = in_process.grpo(capsys, "sft", *args, "sft.epochs=1.5")
    assert res.returncode == 0, res.stderr[-3000:]
    # 9 train rows (test_size 0.25 of 12), 3 a step: 1.5 epochs = ceil(13.5 / 3) = 5 steps
    assert "1.5 epochs of 9 rows at sft.batch_size=3 = 5 steps" in res.stderr
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4, 5]
    assert (out / "checkpoints" / "final").is_dir()
    assert (out / "plots" / "loss.png").is_file()
    both = in_process.grpo(capsys, "sft", *sft_args(tiny_llama_path, tmp_path / "t.jsonl",
                                                    tmp_path / "b", 2), "sft.epochs=1")
    tiny_run.assert_one_error_line(both, "sft.epochs=1 and trainer.max_steps both set")
    assert not (tmp_path / "b").exists()

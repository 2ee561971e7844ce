"""`grpo sample` through the real CLI (in process) on a tiny model: the options take effect,
the rows are what data=jsonl reads, a rerun resumes, and bad input is one error line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import in_process
import pytest
import tiny_run
from test_train_cli import base_args

from grpo_cli.config.schema import DataConfig
from grpo_cli.data import load_split


def sample_args(model: Path, out: Path, *extra: str) -> list[str]:
    return [f"model.name_or_path={model}", "model.dtype=fp32", "data=arith",
            "data.arith.num_examples=40", "sample.limit=3", "sample.num_samples=4",
            "eval.max_new_tokens=8", "logger.console=plain",
            "+reward.components.digits.fn=toy_rewards:digit_share", "~reward.components.format",
            f"sample.out={out}", *extra]


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


THRESHOLD = ["sample.keep=threshold", "sample.threshold=0.0", "sample.max_per_problem=2",
             "sample.dedupe=false"]


def test_sample_keeps_by_threshold_writes_rows_and_resumes(tiny_llama_path, tmp_path, capsys):
    out = tmp_path / "kept.jsonl"
    res = in_process.grpo(capsys, "sample", *sample_args(tiny_llama_path, out, *THRESHOLD))
    assert res.returncode == 0, res.stderr[-3000:]
    done = read(out.with_name("kept.jsonl.done.jsonl"))
    assert done[0]["settings"]["sample.num_samples"] == 4
    problems = done[1:]
    assert len(problems) == 3  # sample.limit
    assert all(len(p["totals"]) == 4 for p in problems)  # sample.num_samples
    rows = read(out)
    assert len(rows) == 6  # every total >= 0, at most sample.max_per_problem=2 each
    for p in problems:
        mine = [r for r in rows if r["problem_id"] == p["id"]]
        assert [r["reward"] for r in mine] == sorted(p["totals"], reverse=True)[:2]
    row = rows[0]
    assert row["prompt"][-1] == {"role": "user", "content": row["question"]}
    assert row["reward"] == pytest.approx(row["rewards"]["correctness"]
                                          + row["rewards"]["digits"])
    assert row["model"] == str(tiny_llama_path) and row["checkpoint"] is None
    assert row["tokens"] <= 8 and isinstance(row["completion"], str)
    summary = json.loads(out.with_name("kept.jsonl.summary.json").read_text())
    assert (summary["problems"], summary["kept"], summary["samples"]) == (3, 6, 12)
    assert summary["kept_per_problem"] == {"2": 3}
    assert "kept: 6 of 12 samples" in res.stdout
    # The kept rows are a dataset: data=jsonl reads question and answer.
    records, _ = load_split(DataConfig(name="jsonl", path=str(out), test_size=0.0,
                                       shuffle=False), "train", 0)
    assert [r.answer for r in records] == [r["answer"] for r in rows]

    # A rerun with more problems skips the 3 done ones and appends 2 more.
    first = out.read_text()
    res = in_process.grpo(capsys, "sample", *sample_args(tiny_llama_path, out, *THRESHOLD,
                                                         "sample.limit=5"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "5 problems (3 done before)" in res.stderr
    assert out.read_text().startswith(first) and len(read(out)) == 10
    assert len(read(out.with_name("kept.jsonl.done.jsonl"))) == 1 + 5

    # Other settings would mix two selections in one file: refused.
    res = in_process.grpo(capsys, "sample", *sample_args(tiny_llama_path, out, *THRESHOLD[:1],
                                                         "sample.threshold=0.05"))
    tiny_run.assert_one_error_line(res, "was started with sample.threshold=0.0")


def test_resume_drops_rows_of_an_unfinished_problem(tiny_llama_path, tmp_path, capsys):
    out = tmp_path / "kept.jsonl"
    args = sample_args(tiny_llama_path, out, *THRESHOLD, "sample.limit=2")
    assert in_process.grpo(capsys, "sample", *args).returncode == 0
    rows, done_file = read(out), out.with_name("kept.jsonl.done.jsonl")
    # A crash after problem 2's rows were appended, before its done line, mid-write of a 3rd.
    lines = done_file.read_text().splitlines(keepends=True)
    done_file.write_text("".join(lines[:-1]) + '{"id": "cut')
    out.write_text(out.read_text() + '{"id": "cut')
    res = in_process.grpo(capsys, "sample", *args)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 problems (1 done before)" in res.stderr
    again = read(out)
    assert len(again) == 4 and again[:2] == rows[:2]
    assert [d["id"] for d in read(done_file)[1:]] == [r["problem_id"] for r in rows[::2]]


def test_sample_best_keeps_the_top_total(tiny_llama_path, tmp_path, capsys):
    out = tmp_path / "best.jsonl"
    res = in_process.grpo(capsys, "sample", *sample_args(
        tiny_llama_path, out, "sample.keep=best", "sample.max_per_problem=4", "sample.limit=2"))
    assert res.returncode == 0, res.stderr[-3000:]
    done = {d["id"]: d for d in read(out.with_name("best.jsonl.done.jsonl"))[1:]}
    for row in read(out):
        assert row["reward"] == max(done[row["problem_id"]]["totals"])
    texts = [(r["problem_id"], " ".join(r["completion"].split())) for r in read(out)]
    assert len(texts) == len(set(texts))  # sample.dedupe=true (the default)


def test_sample_from_a_checkpoint_uses_its_config(tiny_llama_path, tmp_path, capsys):
    run = tmp_path / "run"
    res = in_process.grpo(capsys, "train", *base_args(tiny_llama_path, run, 1))
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = run / "checkpoints" / "final"
    out = tmp_path / "kept.jsonl"
    res = in_process.grpo(capsys, "sample", f"checkpoint={ckpt}", "sample.limit=2",
                          "sample.num_samples=2", "eval.max_new_tokens=6", "sample.keep=best",
                          f"sample.out={out}")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read(out)
    assert rows and all(r["checkpoint"] == str(ckpt) for r in rows)
    assert rows[0]["adapter_path"] == str(ckpt / "policy")
    assert set(rows[0]["rewards"]) == {"correctness", "digits"}  # the run's reward stack
    assert rows[0]["problem_id"].startswith("arith/")  # the run's data


@pytest.mark.parametrize("extra,needle", [
    (["sample.keep=threshold"], "sample.keep=threshold needs sample.threshold"),
    (["sample.threshold=0.5"], "sample.threshold is read only with sample.keep=threshold"),
    (["~reward.components.correctness"], "sample.keep=correct needs a correctness reward"),
    (["sample.keep=sometimes"], "sample.keep='sometimes' is not allowed"),
    (["sample.num_samples=0"], "sample.num_samples"),
    (["eval.num_samples=4"], "eval.num_samples is read only by `grpo train` / `grpo eval`"),
    (["trainer.max_steps=3"], "trainer.max_steps is read only by `grpo train`"),
])
def test_bad_options_are_one_line_before_the_model_loads(extra, needle, tmp_path, capsys):
    out = tmp_path / "kept.jsonl"
    res = in_process.grpo(capsys, "sample", *sample_args(tmp_path / "no_model", out, *extra))
    tiny_run.assert_one_error_line(res, needle)
    assert not list(tmp_path.iterdir())


def test_sample_out_is_required(tiny_llama_path, capsys):
    res = in_process.grpo(capsys, "sample", f"model.name_or_path={tiny_llama_path}")
    tiny_run.assert_one_error_line(res, "sample.out is required")


def test_an_empty_kept_set_writes_nothing(tiny_llama_path, tmp_path, capsys):
    out = tmp_path / "new" / "kept.jsonl"  # the folder too is this run's: removed again
    res = in_process.grpo(capsys, "sample", *sample_args(
        tiny_llama_path, out, "sample.keep=threshold", "sample.threshold=100", "sample.limit=2"))
    tiny_run.assert_one_error_line(
        res, "sample.keep=threshold: no completion of the 2 problems was kept (8 sampled); "
        "nothing written")
    assert not list(tmp_path.iterdir())


def test_a_reward_refusing_a_problem_is_one_line_and_writes_nothing(tiny_llama_path,
                                                                    tmp_path, capsys):
    out = tmp_path / "new" / "kept.jsonl"
    res = in_process.grpo(capsys, "sample", *sample_args(
        tiny_llama_path, out, "sample.keep=best", "sample.limit=3",
        "+reward.components.refuse.fn=toy_rewards:refuses_third_problem"))
    tiny_run.assert_one_error_line(res, "toy reward: the third problem is refused")
    assert not list(tmp_path.iterdir())  # problems 1 and 2 were stored, then removed


@pytest.mark.parametrize("row,needle", [
    ({"question": "1+1?"}, "data.jsonl:2: missing field 'answer'"),
    ({"question": "1+1?", "answer": ""}, "no_gold_answer"),
])
def test_bad_data_rows_name_the_file_and_line(row, needle, tiny_llama_path, tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    good = {"question": "2+2?", "answer": "4"} if "answer" not in row or row["answer"] else row
    data.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    out = tmp_path / "out" / "kept.jsonl"
    res = in_process.grpo(capsys, "sample", f"model.name_or_path={tiny_llama_path}",
                          "data=jsonl", f"data.path={data}", "data.test_size=0",
                          f"sample.out={out}")
    tiny_run.assert_one_error_line(res, needle)
    assert not (tmp_path / "out").exists()


def test_ctrl_c_stops_after_the_finished_problems_and_a_rerun_resumes(tiny_llama_path,
                                                                      tmp_path):
    out = tmp_path / "kept.jsonl"
    args = sample_args(tiny_llama_path, out, *THRESHOLD, "sample.limit=36",
                       "eval.batch_size=4")  # one problem per chunk
    # the third problem is held for a few seconds: the signal below lands mid-run
    args = [a.replace(":digit_share", ":pauses_at_third_problem") for a in args]
    env = tiny_run.run_env(Path(__file__).resolve().parent)
    proc = subprocess.Popen([sys.executable, "-m", "grpo_cli.cli", "sample", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    done_file = out.with_name("kept.jsonl.done.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if done_file.is_file() and len(done_file.read_text().splitlines()) >= 3:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "stop requested: finishing the problems being sampled" in stderr
    assert "rerun the same command to sample the rest" in stderr and "Traceback" not in stderr
    finished = len(read(done_file)) - 1
    assert finished == 3  # the signal came while the third problem was held: it finished
    assert len(read(out)) == 2 * finished  # no partial problem on disk
    res = subprocess.run([sys.executable, "-m", "grpo_cli.cli", "sample", *args],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"36 problems ({finished} done before)" in res.stderr
    assert len(read(out)) == 72


def test_refused_under_torchrun(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    res = in_process.grpo(capsys, "sample", *sample_args(tmp_path / "no_model",
                                                         tmp_path / "kept.jsonl"))
    tiny_run.assert_one_error_line(res, "grpo sample runs in one process")
    assert not list(tmp_path.iterdir())


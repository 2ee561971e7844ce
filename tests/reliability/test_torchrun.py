"""`grpo train` under torchrun, 2 processes on gloo, on the tiny model: the real launcher and
the real CLI (tests/support/fault_cli.py, which also logs each rank's weights per step).

Checked: the ranks hold identical weights after every step; rank 0 alone writes the run folder
and its metrics cover every rank's completions; resume at 2 ranks and at 1; a global batch
that does not split, and bad input, are one error line; collective decisions (an OOM on one
rank halves everywhere, a NaN on one rank skips the update on all); SIGINT to the launcher
leaves a checkpoint; a killed rank ends the run with one line naming what to do and a
resumable checkpoint; two "nodes" (two launchers) on 127.0.0.1.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import tiny_run
from reliability_cli import base_args, run_env
from tiny_run import metrics, signal_after_first_step, torchrun_command

from grpo_cli.trainer.checkpoint import find_latest

# 11 torchrun launches of 2 ranks: about 3 minutes on 2 cores
pytestmark = pytest.mark.slow


def torchrun(nproc: int, args: list[str], fault: str | None = None, weights: Path | None = None,
             launcher: tuple[str, ...] = (), timeout: float = 300) -> subprocess.CompletedProcess:
    env = run_env(fault)
    if weights is not None:
        env["GRPO_WEIGHT_LOG"] = str(weights)
    return subprocess.run([*torchrun_command(nproc, *launcher), *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def weight_log(prefix: Path, rank: int) -> dict[int, str]:
    path = Path(f"{prefix}.rank{rank}.jsonl")
    return {r["step"]: r["sha256"] for r in map(json.loads, path.read_text().splitlines())}


def grpo_errors(res: subprocess.CompletedProcess) -> list[str]:
    """grpo's own `error:` lines (torchrun adds its failure summary after them)."""
    return [line for line in res.stderr.splitlines() if line.startswith("error: ")]


def no_grpo_traceback(res: subprocess.CompletedProcess) -> None:
    frames = [line for line in res.stderr.splitlines() if line.strip().startswith("File ")]
    assert not [f for f in frames if "grpo_cli" in f or "fault_cli" in f], res.stderr[-3000:]


# A held-out eval at step 3 of 7 problems: an odd count, so the ranks' shares differ.
EVAL = ("trainer.eval_every=3", "eval.limit=7", "eval.max_new_tokens=8", "eval.batch_size=4")


@pytest.fixture(scope="module")
def two_ranks(tiny_llama_path, tmp_path_factory):
    """A 3-step 2-rank run with a checkpoint every step, then resumed to step 4 on 2 ranks."""
    root = tmp_path_factory.mktemp("torchrun")
    out, w = root / "run", root / "w"
    args = base_args(tiny_llama_path, out, 3, "trainer.save_every=1", "trainer.keep_last=5",
                     *EVAL)
    first = torchrun(2, args, weights=w)
    resumed = torchrun(2, [*args, "trainer.max_steps=4", "trainer.resume=auto"], weights=w)
    return root, out, w, first, resumed


def test_ranks_hold_identical_weights_and_rank_0_writes_one_run(two_ranks):
    root, out, w, first, resumed = two_ranks
    assert first.returncode == 0, first.stderr[-3000:]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    w0, w1 = weight_log(w, 0), weight_log(w, 1)
    assert sorted(w0) == [1, 2, 3, 4] and w0 == w1  # identical after every step, resumed too
    assert len(set(w0.values())) == 4  # and they do change
    # One console: the step lines and the data-parallel line once, from rank 0.
    console = first.stdout + first.stderr
    assert console.count("data parallel: 2 ranks (gloo), 1 prompts per rank") == 1
    assert sum(line.startswith("step 1/3") for line in console.splitlines()) == 1
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    # The samples of step 1 hold both ranks' groups: 2 prompts x G=4.
    samples = [json.loads(line) for line in (out / "samples" / "step-1.jsonl").read_text()
               .splitlines()]
    assert len(samples) == 8 and sorted({s["group"] for s in samples}) == [0, 1]
    mean = sum(s["reward"] for s in samples) / 8  # metrics are over every rank's completions
    assert rows[0]["reward/mean"] == pytest.approx(mean, rel=1e-5)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["best", "final", "step-1", "step-2", "step-3", "step-4"]
    assert "resumed from" in resumed.stdout + resumed.stderr


def test_eval_split_across_ranks_gives_the_one_process_report(two_ranks, tmp_path):
    root, out, *_ = two_ranks
    ckpt = out / "checkpoints" / "step-3"
    args = [f"checkpoint={ckpt}", "eval.limit=7", "eval.max_new_tokens=8", "eval.batch_size=4",
            "logger.console=quiet"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        one, two = pool.map(lambda a: subprocess.run(
            a[0], capture_output=True, text=True, env=run_env(), timeout=300),
            [([*torchrun_command(1, command="eval"), *args, f"eval.out={tmp_path / 'one'}"],),
             ([*torchrun_command(2, command="eval"), *args, f"eval.out={tmp_path / 'two'}"],)])
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    rows = {name: [json.loads(line) for line in (tmp_path / name / "samples.jsonl")
                   .read_text().splitlines()] for name in ("one", "two")}
    assert len(rows["two"]) == 7
    assert [(r["id"], r["completions"]) for r in rows["two"]] == \
        [(r["id"], r["completions"]) for r in rows["one"]]
    report = json.loads((tmp_path / "two" / "report.json").read_text())
    # The held-out eval during the 2-rank run covered the same problems with the same weights.
    logged = next(r for r in metrics(out) if r["step"] == 3)
    for key in ("accuracy", "mean_completion_tokens", "format_rate"):
        assert logged[f"eval/{key}"] == pytest.approx(report[key]), key


def test_resume_with_one_process_continues_the_two_rank_run(two_ranks, tiny_llama_path):
    root, out, w, first, resumed = two_ranks
    args = base_args(tiny_llama_path, out, 5, "trainer.save_every=1", "trainer.keep_last=5",
                     "trainer.resume=auto")
    res = subprocess.run([*torchrun_command(1), *args], capture_output=True, text=True,
                         env={**run_env(), "GRPO_WEIGHT_LOG": str(root / "w1")}, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4, 5]
    assert sorted(weight_log(root / "w1", 0)) == [5]


def test_accelerate_launch_runs_the_same_steps(two_ranks, tiny_llama_path, tmp_path):
    # accelerate launch --multi_gpu starts torchrun's workers: the same ranks, the same steps.
    root, out, *_ = two_ranks
    accel = Path(sys.executable).with_name("accelerate")
    if not accel.is_file():
        pytest.skip("accelerate is not installed")
    other = tmp_path / "run"
    res = subprocess.run(
        [str(accel), "launch", "--multi_gpu", "--num_processes=2", "--num_machines=1",
         "--mixed_precision=no", "--dynamo_backend=no", "-m", "grpo_cli", "train",
         *base_args(tiny_llama_path, other, 2), "model.device=cpu"],
        capture_output=True, text=True, env=run_env(), timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "data parallel: 2 ranks (gloo)" in res.stdout + res.stderr
    ours, theirs = metrics(other), metrics(out)[:2]
    assert [r["reward/mean"] for r in ours] == [r["reward/mean"] for r in theirs]


def test_a_batch_that_does_not_split_and_bad_input_are_one_line(tiny_llama_path, tmp_path):
    uneven = base_args(tiny_llama_path, tmp_path / "a", 2, "trainer.prompts_per_step=3")
    bad = base_args(tiny_llama_path, tmp_path / "b", 2, "data=jsonl",
                    f"data.path={tmp_path / 'missing.jsonl'}")
    with ThreadPoolExecutor(max_workers=2) as pool:
        res_uneven, res_bad = pool.map(lambda a: torchrun(2, a), [uneven, bad])
    for res, needles in ((res_uneven, ("trainer.prompts_per_step=3", "2 ranks")),
                         (res_bad, ("missing.jsonl",))):
        assert res.returncode != 0
        errors = grpo_errors(res)
        assert len(errors) == 1, res.stderr[-3000:]
        for needle in needles:
            assert needle in errors[0], errors[0]
        no_grpo_traceback(res)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_an_oom_on_one_rank_halves_everywhere_and_a_nan_skips_everywhere(tiny_llama_path,
                                                                        tmp_path):
    oom = base_args(tiny_llama_path, tmp_path / "oom", 2)
    nan = base_args(tiny_llama_path, tmp_path / "nan", 4, "trainer.max_bad_steps=2")
    with ThreadPoolExecutor(max_workers=2) as pool:
        res_oom, res_nan = pool.map(
            lambda a: torchrun(2, a[0], fault=a[1], weights=a[2]),
            [(oom, "oom_backward:1@1", tmp_path / "w_oom"), (nan, "nan_loss:2@1",
                                                             tmp_path / "w_nan")])
    assert res_oom.returncode == 0, res_oom.stderr[-3000:]
    warnings = (tmp_path / "oom" / "warnings.log").read_text()
    assert "another rank ran out of memory" in warnings
    assert "trainer.micro_batch_size=2" in warnings
    assert metrics(tmp_path / "oom")[0]["health/oom_retries"] == 1
    assert weight_log(tmp_path / "w_oom", 0) == weight_log(tmp_path / "w_oom", 1)
    # NaN on rank 1 from step 2 on: both ranks skip steps 2 and 3, stop, one line from rank 0.
    assert res_nan.returncode != 0
    errors = grpo_errors(res_nan)
    assert len(errors) == 1 and "2 steps in a row" in errors[0], res_nan.stderr[-3000:]
    w0, w1 = weight_log(tmp_path / "w_nan", 0), weight_log(tmp_path / "w_nan", 1)
    assert w0 == w1 and w0[1] == w0[2] == w0[3]  # no update applied anywhere after step 1
    assert [r["health/skipped_steps"] for r in metrics(tmp_path / "nan")] == [0, 1, 2]


def test_dynamic_sampling_refills_per_rank_in_step(tiny_llama_path, tmp_path):
    # Half of the prompts get a constant reward: zero-variance groups land unevenly on the
    # ranks, each refills its own share, and the rounds end together.
    out, w = tmp_path / "run", tmp_path / "w"
    args = tiny_run.base_args(tiny_llama_path, out, 3, "algo.dynamic_sampling=true",
                              "algo.dynamic_sampling_max_rounds=3", "trainer.prompts_per_step=4",
                              reward="faulty_rewards:half_constant")
    res = torchrun(2, args, weights=w)
    assert res.returncode == 0, res.stderr[-3000:]
    assert weight_log(w, 0) == weight_log(w, 1)
    rows = metrics(out)
    assert any(r["dynamic_sampling/prompts_sampled"] > 4 for r in rows)  # refills happened
    for samples in (out / "samples").iterdir():  # each covers both ranks' 4 groups
        assert len(samples.read_text().splitlines()) == 4 * 4


def test_sigint_to_the_launcher_leaves_a_checkpoint(tiny_llama_path, tmp_path):
    out = tmp_path / "run"
    res = signal_after_first_step(base_args(tiny_llama_path, out, 500), out, run_env(),
                                  signal.SIGINT, wait_s=120, command=torchrun_command(2))
    ckpt = find_latest(out)
    assert ckpt is not None and ckpt.name.startswith("step-"), res.stderr[-3000:]
    step = json.loads((ckpt / "meta.json").read_text())["step"]
    assert step == metrics(out)[-1]["step"]
    assert res.stderr.count(f"stopped at step {step}; checkpoint") == 1, res.stderr[-3000:]
    assert "torchrun --nproc_per_node=2 -m grpo_cli train" in res.stderr
    no_grpo_traceback(res)


def test_a_killed_rank_ends_the_run_with_one_line_and_a_resumable_checkpoint(tiny_llama_path,
                                                                            tmp_path):
    out = tmp_path / "run"
    args = base_args(tiny_llama_path, out, 4, "trainer.save_every=1")
    res = torchrun(2, args, fault="kill:3@1", timeout=120)
    assert res.returncode != 0
    errors = grpo_errors(res)
    assert len(errors) == 1, res.stderr[-3000:]
    assert "rank 0 stopped at step 3: lost contact with another rank" in errors[0]
    assert "step-2" in errors[0] and "trainer.resume=auto" in errors[0]
    assert "exitcode  : -9" in res.stderr  # the launcher's summary names the killed rank
    no_grpo_traceback(res)
    resumed = torchrun(2, [*args, "trainer.resume=auto"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4]


def test_max_restarts_resumes_after_a_killed_rank(tiny_llama_path, tmp_path):
    # torchrun restarts both ranks once; trainer.resume=auto continues from step-2.
    out = tmp_path / "run"
    args = base_args(tiny_llama_path, out, 4, "trainer.save_every=1", "trainer.resume=auto")
    env = {**run_env("kill:3@1"), "GRPO_FAULT_ONCE": str(tmp_path / "fired")}
    res = subprocess.run([*torchrun_command(2, "--standalone", "--max-restarts=1"), *args],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "lost contact with another rank" in res.stderr  # the first attempt's line
    assert "resumed from" in res.stdout + res.stderr
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_one_machine(tiny_llama_path, tmp_path):
    out, w = tmp_path / "run", tmp_path / "w"
    args = base_args(tiny_llama_path, out, 2)
    launcher = ("--nnodes=2", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{_free_port()}",
                "--rdzv-id=grpo-test")
    with ThreadPoolExecutor(max_workers=2) as pool:
        nodes = list(pool.map(lambda _: torchrun(1, args, weights=w, launcher=launcher),
                              range(2)))
    for res in nodes:
        assert res.returncode == 0, res.stderr[-3000:]
    assert weight_log(w, 0) == weight_log(w, 1) and sorted(weight_log(w, 0)) == [1, 2]
    assert [r["step"] for r in metrics(out)] == [1, 2]
    assert sum("data parallel: 2 ranks" in r.stdout + r.stderr for r in nodes) == 1

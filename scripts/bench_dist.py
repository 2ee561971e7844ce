"""Benchmark data-parallel scaling on this machine: one process with 2 threads against
torchrun with 2 processes of 1 thread each, on the same GRPO steps.

    python scripts/bench_dist.py                    # 3 rounds x 4 steps, the CPU workload
    python scripts/bench_dist.py --rounds 5 --steps 6

The workload is bench_step.py's CPU one (SmolLM2-135M-Instruct, LoRA r=16, 2 prompts x G=8,
64 new tokens, fp32): under torchrun each rank takes one prompt's group. Runs alternate
(single, dist, dist, single, ...) so that a noisy neighbour hits both alike. Each run's first
step is left out (warm-up). Printed per setup: the medians of step time, generate time,
log-prob + train time, time in collectives (time/sync_s: the gradient sums and the waits for
the slower rank), completions per second, and the ratio dist / single.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_step  # noqa: E402  (the workload, the model and the prompts file)


def command(kind: str, model: Path, prompts: Path, out: Path, steps: int) -> list[str]:
    w = bench_step.WORKLOADS["cpu"]
    args = bench_step.ours_command(w, model, prompts, out, steps)[2:]  # after `grpo train`
    if kind == "single":
        return [str(Path(sys.executable).with_name("grpo")), "train", *args,
                "trainer.cpu_threads=2"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "grpo_cli", "train", *args, "trainer.cpu_threads=1"]


def run(kind: str, model: Path, prompts: Path, work: Path, steps: int, tag: str) -> list[dict]:
    out = work / f"{kind}-{tag}"
    env = {**os.environ, "OMP_NUM_THREADS": "2" if kind == "single" else "1",
           "WANDB_MODE": "disabled"}
    log = work / f"{kind}-{tag}.log"
    with log.open("w") as fh:
        subprocess.run(command(kind, model, prompts, out, steps), stdout=fh,
                       stderr=subprocess.STDOUT, env=env, check=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
            if "reward/mean" in line]
    return rows[1:]  # the first step warms up


def summarise(rows: list[dict], completions: int) -> dict[str, float]:
    med = lambda key: statistics.median(r.get(key, 0.0) for r in rows)  # noqa: E731
    return {"step_s": med("time/step_s"), "generate_s": med("time/generate_s"),
            "train_s": med("time/logprob_s") + med("time/train_s"), "sync_s": med("time/sync_s"),
            "completions_per_s": completions / med("time/step_s")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--work", type=Path, default=Path("outputs/bench_dist"))
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    model = bench_step.demo_model()
    prompts = a.work / "prompts.jsonl"
    bench_step.write_prompts(model, 64, prompts)
    w = bench_step.WORKLOADS["cpu"]
    completions = w["prompts_per_step"] * w["num_generations"]
    rows: dict[str, list[dict]] = {"single": [], "dist": []}
    for r in range(a.rounds):
        order = ("single", "dist") if r % 2 == 0 else ("dist", "single")
        for kind in order:
            rows[kind] += run(kind, model, prompts, a.work, a.steps, f"{stamp}-{r}")
            print(f"round {r + 1}/{a.rounds}: {kind} done", file=sys.stderr)
    res = {k: summarise(v, completions) for k, v in rows.items()}
    print(f"workload: {w['prompts_per_step']} prompts x G={w['num_generations']}, "
          f"{w['max_new_tokens']} tokens, {a.rounds} rounds x {a.steps - 1} timed steps")
    print(f"{'':26}{'1 proc x 2 thr':>16}{'2 proc x 1 thr':>16}{'ratio':>8}")
    for key in ("step_s", "generate_s", "train_s", "sync_s", "completions_per_s"):
        one, two = res["single"][key], res["dist"][key]
        ratio = f"{two / one:8.2f}" if one else f"{'-':>8}"
        print(f"{key:26}{one:16.3f}{two:16.3f}{ratio}")


if __name__ == "__main__":
    main()

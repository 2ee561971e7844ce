"""Run the four R1 stages on the quickstart task and print held-out accuracy after each.

    python scripts/r1_chain.py                       # everything under outputs/r1_chain
    python scripts/r1_chain.py --out /tmp/chain --problems 48 --threads 1

On SmolLM2-135M-Instruct and synthetic arithmetic (the quickstart's model and data, CPU, no
hub), each stage reads the previous stage's output:

    0. base         grpo eval of the bare model
    1. cold start   grpo sample from the base model (keep correct), grpo sft on the kept rows
                    (a STaR-style cold start: there is no stronger teacher offline)
    2. GRPO         grpo train +recipe=quickstart model.adapter_path=<stage 1 adapter>
    3. rejection    grpo sample checkpoint=<stage 2> (keep correct)
    4. SFT again    grpo sft on stage 3's rows, continuing the stage 2 adapter

and after stages 0, 1, 2 and 4 `grpo eval` greedy on the held-out problems (the number to
trust; the same 64 new tokens for every stage). A summary table is printed at the end and
written to <out>/summary.json. A stage whose output exists is not run again, so a crashed
chain continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def grpo(*args: str) -> None:
    cmd = [sys.executable, "-m", "grpo_cli.cli", *args]
    print("$ grpo " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def evaluate(out: Path, name: str, target: list[str], common: list[str]) -> dict:
    where = out / "eval" / name
    if not (where / "report.json").exists():
        grpo("eval", *target, "eval.limit=null", f"eval.out={where}",
             "eval.max_new_tokens=64", *common)
    return json.loads((where / "report.json").read_text())


def sample(out: Path, name: str, source: list[str], args, common: list[str]) -> dict:
    kept = out / f"{name}.jsonl"
    summary = Path(f"{kept}.summary.json")
    if not summary.exists():
        grpo("sample", *source, f"sample.out={kept}", f"sample.limit={args.problems}",
             f"sample.num_samples={args.samples}", "sample.keep=correct",
             "sample.max_per_problem=2", "eval.temperature=0.8", "eval.max_new_tokens=64",
             *common)
    return json.loads(summary.read_text())


def sft(out: Path, name: str, data: Path, steps: int, extra: list[str], common: list[str],
        threads: list[str]) -> Path:
    run = out / name
    final = run / "checkpoints" / "final"
    if not final.exists():
        grpo("sft", "model=smollm2_135m", "data=jsonl", f"data.path={data}",
             "data.test_size=0.1", f"trainer.output_dir={run}", f"trainer.max_steps={steps}",
             "sft.batch_size=8", "trainer.micro_batch_size=8", "optim.lr=1e-4",
             "optim.warmup_steps=2", "optim.scheduler=cosine", *extra, *common, *threads)
    return final


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/r1_chain")
    parser.add_argument("--problems", type=int, default=64, help="train problems sampled per stage")
    parser.add_argument("--samples", type=int, default=8, help="completions per problem")
    parser.add_argument("--sft-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="trainer.cpu_threads")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = [] if args.threads is None else [f"trainer.cpu_threads={args.threads}"]
    common = ["logger.wandb.mode=disabled", "logger.console=plain"]  # train and sft only
    base = ["model=smollm2_135m", "data=arith"]
    t0 = time.time()
    rows: dict[str, dict] = {"0 base": evaluate(out, "base", base, threads)}

    cold = sample(out, "cold_start", base, args, threads)
    sft1 = sft(out, "sft1", out / "cold_start.jsonl", args.sft_steps, [], common, threads)
    # an SFT checkpoint's data is its JSONL rows: evaluate it on the arithmetic test split
    rows["1 cold-start SFT"] = evaluate(out, "sft1", [f"checkpoint={sft1}", "data=arith"], threads)

    rl = out / "grpo"
    if not (rl / "checkpoints" / "final").exists():
        grpo("train", "+recipe=quickstart", f"trainer.output_dir={rl}",
             f"model.adapter_path={sft1 / 'policy'}", *common, *threads)
    rl_final = rl / "checkpoints" / "final"
    rows["2 GRPO"] = evaluate(out, "grpo", [f"checkpoint={rl_final}"], threads)

    kept = sample(out, "rejection", [f"checkpoint={rl_final}"], args, threads)
    sft2 = sft(out, "sft2", out / "rejection.jsonl", args.sft_steps,
               [f"model.adapter_path={rl_final / 'policy'}"], common, threads)
    rows["4 SFT on kept"] = evaluate(out, "sft2", [f"checkpoint={sft2}", "data=arith"], threads)

    summary = {"minutes": round((time.time() - t0) / 60, 1), "cold_start_sample": cold,
               "rejection_sample": kept,
               "eval": {k: {m: r.get(m) for m in ("num_examples", "accuracy_flexible",
                                                   "accuracy_strict", "format_rate")}
                        for k, r in rows.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nR1 chain on the quickstart task, {summary['minutes']} min")
    print(f"{'stage':22s}{'flexible':>10s}{'strict':>10s}{'format':>10s}")
    for name, r in summary["eval"].items():
        print(f"{name:22s}{r['accuracy_flexible']:10.3f}{r['accuracy_strict']:10.3f}"
              f"{r['format_rate']:10.3f}")
    for name in ("cold_start_sample", "rejection_sample"):
        print(f"{name}: {json.dumps(summary[name])[:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run the quickstart recipe and print reward and accuracy at the start and at the end.

    python scripts/quickstart.py                    # train, then evaluate base and trained
    python scripts/quickstart.py --no-eval trainer.max_steps=20

It trains SmolLM2-135M-Instruct on synthetic arithmetic with `grpo train +recipe=quickstart`
(any extra arguments are passed on as overrides), then reads metrics.jsonl: the mean of the
first and of the last five steps of `reward/mean` and `accuracy` (on the sampled training
completions). Unless --no-eval, it also runs `grpo eval` greedy on the held-out arithmetic
problems for the base model and for the final checkpoint, which is the number to trust.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path


def grpo(*args: str) -> None:
    cmd = [sys.executable, "-m", "grpo_cli.cli", *args]
    print("$ grpo " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def window_mean(rows: list[dict], key: str, first: bool, n: int = 5) -> float:
    vals = [r[key] for r in rows if r.get(key) is not None]
    part = vals[:n] if first else vals[-n:]
    return sum(part) / max(len(part), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/quickstart_script")
    parser.add_argument("--no-eval", action="store_true")
    args, overrides = parser.parse_known_args()
    out = Path(args.out)
    common = [f"trainer.output_dir={out}", "logger.wandb.mode=disabled", "logger.console=plain"]
    t0 = time.time()
    grpo("train", "+recipe=quickstart", *common, *overrides)
    minutes = (time.time() - t0) / 60
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
            if "reward/mean" in line]
    machine = platform.processor() or platform.machine()
    print(f"\nquickstart: {len(rows)} steps in {minutes:.1f} min on {machine}")
    print(f"{'':28s}{'first 5 steps':>15s}{'last 5 steps':>15s}")
    for key in ("reward/mean", "accuracy", "completion_len/mean"):
        print(f"{key:28s}{window_mean(rows, key, True):15.3f}{window_mean(rows, key, False):15.3f}")
    if args.no_eval:
        return 0
    reports = {}
    targets = {"base": ["model=smollm2_135m", "data=arith"],
               "trained": [f"checkpoint={out / 'checkpoints' / 'final'}"]}
    for name, target in targets.items():
        eval_out = out / "eval" / name
        grpo("eval", *target, "eval.limit=null", f"eval.out={eval_out}",
             "eval.max_new_tokens=64")
        reports[name] = json.loads((eval_out / "report.json").read_text())
    print(f"\nheld-out arithmetic, greedy ({reports['base']['num_examples']} problems)")
    for key in ("accuracy_strict", "accuracy_flexible", "format_rate"):
        print(f"{key:28s}{reports['base'][key]:15.3f}{reports['trained'][key]:15.3f}"
              "   (base, trained)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

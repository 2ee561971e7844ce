"""Grading throughput: the correctness reward on plain numbers, and symbolic pairs uncached.

    python scripts/bench_grading.py                 # 20,000 plain answers, 200 symbolic pairs
    python scripts/bench_grading.py --symbolic 400

Plain numbers: GSM8K-style completions (`... #### 18`, or prose ending in a number for the
flexible mode) graded by the built-in `correctness` reward against integer golds; answers/s
is completions / wall-clock seconds, for strict and flexible extraction. Nothing leaves the
process: this is the cheap path.

Symbolic pairs: MATH-500 gold answers (fractions, roots, tuples, pi) against a rewritten
form (`x+0`, `0+x`), every pair unique and the verdict cache cleared, so each one runs
math-verify in a worker process. Reported: pairs/s for one batch (the pool works in
parallel) and the p50 / p95 latency of a pair graded alone.
Worker start-up is paid before the clock starts. Wall-clock only: on a busy machine read the
numbers as a lower bound.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / ".." / "shared" / "data" / "math500" / "test.jsonl"


def plain_completions(n: int, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """(hash completions, prose completions, golds): half right, half off by one."""
    rng = random.Random(seed)
    golds, hashed, prose = [], [], []
    for i in range(n):
        gold = rng.randint(1, 5000)
        said = gold if i % 2 == 0 else gold + 1
        work = f"She buys {rng.randint(2, 9)} boxes of {rng.randint(2, 30)} eggs at $3 each."
        golds.append(str(gold))
        hashed.append(f"{work}\nSo the total is {said}.\n#### {said}")
        prose.append(f"{work} So the total is {said} dollars.")
    return hashed, prose, golds


def bench_plain(n: int) -> None:
    from grpo_cli.rewards.builtin import correctness

    hashed, prose, golds = plain_completions(n)
    correctness([""] * 2, prose[:2], golds[:2], answer_format="hash")  # compile the regexes
    for label, completions, mode in (("strict  #### N", hashed, "strict"),
                                     ("flexible #### N", hashed, "flexible"),
                                     ("flexible prose", prose, "flexible")):
        start = time.perf_counter()
        rewards = correctness([""] * n, completions, golds, mode=mode, answer_format="hash")
        seconds = time.perf_counter() - start
        accepted = sum(r == 1.0 for r in rewards) / n
        print(f"plain numbers, {label:16}: {n / seconds:9,.0f} answers/s "
              f"(accepted {accepted:.3f}, expected 0.500)")


def symbolic_pairs(limit: int) -> list[tuple[str, str]]:
    """(prediction, gold) pairs the cheap path cannot decide, each pair unique."""
    rows = [json.loads(line) for line in DATA.open()]
    pairs = []
    for row in rows:
        gold = row["answer"]
        if "\\frac" in gold or "\\sqrt" in gold or "(" in gold or "\\pi" in gold:
            pairs.append((f"{gold}+0", gold))
            pairs.append((f"0+{gold}", gold))
    return list(dict.fromkeys(pairs))[:limit]


def bench_symbolic(limit: int, timeout_s: float) -> None:
    from grpo_cli.rewards import equivalence
    from grpo_cli.rewards.equivalence import answers_match, answers_match_many

    pairs = symbolic_pairs(2 * limit)
    batch, alone = pairs[0::2][:limit], pairs[1::2][:limit]
    assert answers_match(r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}", timeout_s=120.0)  # workers up
    equivalence._cache.clear()
    start = time.perf_counter()
    verdicts = answers_match_many([p for p, _ in batch], [g for _, g in batch], timeout_s)
    seconds = time.perf_counter() - start
    print(f"symbolic, one batch of {len(batch)}: {len(batch) / seconds:7.1f} pairs/s "
          f"(accepted {sum(verdicts) / len(batch):.3f})")
    latencies = []
    for pred, gold in alone:
        start = time.perf_counter()
        answers_match(pred, gold, timeout_s)
        latencies.append(time.perf_counter() - start)
    p95 = statistics.quantiles(latencies, n=20)[-1]
    print(f"symbolic, {len(alone)} pairs one at a time: p50 "
          f"{1000 * statistics.median(latencies):.0f} ms, p95 {1000 * p95:.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--plain", type=int, default=20_000, help="plain-number completions")
    ap.add_argument("--symbolic", type=int, default=200, help="symbolic pairs per measurement")
    ap.add_argument("--timeout", type=float, default=3.0, help="symbolic time limit, s")
    args = ap.parse_args()
    bench_plain(args.plain)
    bench_symbolic(args.symbolic, args.timeout)


if __name__ == "__main__":
    main()

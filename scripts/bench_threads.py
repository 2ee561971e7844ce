"""Time a LoRA-training-sized matrix workload at each torch thread count, optionally with
other busy processes on the cores: the measurement behind `trainer.cpu_threads=null` (auto).

    python scripts/bench_threads.py                      # threads 1..cores, machine as it is
    python scripts/bench_threads.py --busy 1 --rounds 3  # plus one spinning process

The workload is what one micro-batch of the quickstart does most: forward and backward of
[rows, 576] x [576, 1536] products (SmolLM2-135M's MLP shape). Each thread count runs
`--rounds` times, alternating, and the median is printed with the machine's load average.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

import torch


def spin(stop) -> None:
    """A busy neighbour: pure-Python arithmetic until told to stop."""
    x = 0
    while not stop.is_set():
        for i in range(10_000):
            x = (x + i * i) % 1_000_003


def workload(rows: int, reps: int) -> float:
    torch.manual_seed(0)
    x = torch.randn(rows, 576)
    w = torch.randn(576, 1536, requires_grad=True)
    t0 = time.perf_counter()
    for _ in range(reps):
        y = x @ w
        (y @ w.t()).pow(2).mean().backward()
        w.grad = None
    return time.perf_counter() - t0


def main() -> None:
    cores = len(os.sched_getaffinity(0))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default=",".join(str(n) for n in range(1, cores + 1)))
    parser.add_argument("--busy", type=int, default=0, help="spinning processes to add")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    counts = [int(n) for n in args.threads.split(",")]
    stop = mp.Event()
    busy = [mp.Process(target=spin, args=(stop,), daemon=True) for _ in range(args.busy)]
    for p in busy:
        p.start()
    try:
        times: dict[int, list[float]] = {n: [] for n in counts}
        for _ in range(args.rounds):
            for n in counts:
                torch.set_num_threads(n)
                times[n].append(workload(args.rows, args.reps))
    finally:
        stop.set()
        for p in busy:
            p.join()
    print(f"{cores} cores, {args.busy} added busy process(es), load average "
          f"{os.getloadavg()[0]:.1f}, {args.rounds} rounds of {args.reps} x "
          f"[{args.rows}, 576] x [576, 1536] forward + backward")
    for n in counts:
        print(f"  {n} thread(s): median {statistics.median(times[n]):.2f} s "
              f"(rounds: {', '.join(f'{t:.2f}' for t in times[n])})")


if __name__ == "__main__":
    main()

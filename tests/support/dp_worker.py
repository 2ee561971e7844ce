"""One rank of a data-parallel step on fixed completions (tests/trainer/test_data_parallel.py).

`steps_on_fixed_batch(rank, world, init_file, model, out, configs)` joins a gloo group of
`world` processes (none when world is 1) and, for each config (a name and its overrides),
builds the tiny run of step_run.py, generates the same two groups in every process (fixed
seed), keeps this rank's share of the groups, runs the real step.update and saves, for the
test to compare: the summed gradient each optimizer update applied, the trainable weights
after the step, the StepStats numbers, and the sizes of the all-reduces it made.
"""

from __future__ import annotations

import torch
import torch.distributed as td

from grpo_cli.trainer.dist import Dist
from grpo_cli.trainer.step import update


def steps_on_fixed_batch(rank: int, world: int, init_file: str, model: str, out: str,
                         configs: list[tuple[str, list[str]]]) -> None:
    dist = Dist()
    if world > 1:
        td.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                              world_size=world)
        dist = Dist(rank=rank, world=world, backend="gloo")
    torch.set_num_threads(1)
    for name, overrides in configs:
        _step(dist, model, f"{out}.{name}", overrides)
    if world > 1:
        td.destroy_process_group()


def _step(dist: Dist, model: str, out: str, overrides: list[str]) -> None:
    from dataclasses import replace

    from step_run import G, make_run, scored_batch

    rank, world = dist.rank, dist.world
    run = make_run(model, *overrides)
    run.parts = replace(run.parts, dist=dist)
    full = scored_batch(run)  # the same groups in every process
    per_rank = len(full.indices) // world
    groups = list(range(rank * per_rank, (rank + 1) * per_rank))
    rows = [g * G + j for g in groups for j in range(G)]
    idx = torch.tensor(rows)
    batch = replace(full, indices=[full.indices[g] for g in groups],
                    rollout=full.rollout.select(rows), total=full.total[idx],
                    scored=full.scored[idx])

    applied: list[list[torch.Tensor]] = []
    step = run.optimizer.step

    def recording_step(*args, **kwargs):
        applied.append([p.grad.clone() for p in run.params])
        return step(*args, **kwargs)

    run.optimizer.step = recording_step
    sizes: list[int] = []
    all_reduce = td.all_reduce

    def counting_all_reduce(tensor, *args, **kwargs):
        sizes.append(tensor.numel())
        return all_reduce(tensor, *args, **kwargs)

    td.all_reduce = counting_all_reduce
    try:
        stats = update(run.parts, run.state, batch)
    finally:
        td.all_reduce = all_reduce
    torch.save({"grads": applied, "weights": [p.detach().clone() for p in run.params],
                "losses": stats.losses, "grad_norms": stats.grad_norms,
                "loss_means": stats.loss_means, "entropy": stats.entropy,
                "all_reduce_sizes": sizes, "num_params": sum(p.numel() for p in run.params)},
               f"{out}.rank{rank}.pt")

"""What a data-parallel step shares across ranks (trainer/dist.py holds the collectives).

    take_prompts(parts, n)                  this rank's next n prompts of the one shared order
    check_world(cfg, world)                 refuse a global batch that does not split evenly
    global_counts(parts, seqs, tokens)      an optimizer step's sequence and token totals
    finish_update(parts, loss)              the gradient sum, the global loss of an update
    global_loss_parts(parts, sums)          the loss sums of every rank, added up
    global_entropy_threshold(parts, ent, q) algo.top_entropy_quantile's threshold over every
                                            rank's tokens of an optimizer step
    sync_state(parts, state)                an OOM halving on one rank halves everywhere
    global_step_view(parts, state, ...)     rank 0's view of the whole step, for metrics.jsonl
    RankTracker                             the tracker of ranks > 0: writes nothing

The prompt order is a function of the seed and the number of prompts taken, on every rank
alike: each rank draws the whole global batch (prompts_per_step) from PromptSampler and keeps
its own slice of whole groups, so 1, 2 or 4 ranks train on the same prompts in the same
steps and the sampler's position (what checkpoints store) is the same everywhere.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import torch


def check_world(cfg: Any, world: int) -> None:
    """trainer.prompts_per_step is global: it must split into whole groups per rank."""
    if world > 1 and cfg.trainer.prompts_per_step % world:
        from grpo_cli.trainer.dist import env_rank, shared_error

        raise shared_error(f"trainer.prompts_per_step={cfg.trainer.prompts_per_step} does "
                           f"not split evenly over {world} ranks (the global number of prompts "
                           f"per step; each rank takes whole groups): use a multiple of "
                           f"{world}", env_rank())


def take_prompts(parts: Any, n: int) -> list[int]:
    """This rank's next `n` prompt indices. Every rank draws the sum of all ranks' n from the
    shared order and keeps its slice (rank 0 the first ones)."""
    dist = parts.dist
    counts = [int(c) for c in dist.gather(n)] if dist.active else [n]
    drawn = parts.sampler.take(sum(counts))
    start = sum(counts[:dist.rank])
    return drawn[start:start + n]


def global_counts(parts: Any, seqs: int, tokens: int) -> tuple[int, int]:
    """(sequences, completion tokens) of an optimizer step over every rank: the loss of each
    rank's share is normalised by these, so the summed gradients are the full batch's."""
    total = parts.dist.sum([seqs, tokens])
    return int(total[0]), int(total[1])


def finish_update(parts: Any, loss: float) -> float:
    """Sum the accumulated gradients over ranks (the one all-reduce of an optimizer update)
    and return the update's global loss: every rank then decides alike whether to skip it."""
    parts.dist.sum_grads(parts.params)
    return parts.dist.sum([loss])[0]


def global_loss_parts(parts: Any, sums: list[dict]) -> list[dict]:
    """grpo_loss's sums of every micro-batch of every rank, as one dict of sums (what
    algo.loss.combine_metrics adds up): the logged means and the KL controller's input are
    then the global batch's, the same on every rank."""
    if not parts.dist.active or not sums:
        return sums
    keys = sorted(sums[0])
    local = [sum(float(s[k]) for s in sums) for k in keys]
    return [dict(zip(keys, (torch.tensor(v) for v in parts.dist.sum(local))))]


def global_entropy_threshold(parts: Any, entropies: torch.Tensor, quantile: float) -> float:
    """The entropy of the top `quantile` of an optimizer step's completion tokens (1-D
    `entropies`, this rank's) over every rank: each rank's micro-batches then keep the same
    tokens they would in one whole-batch pass."""
    from grpo_cli.algo.policy_losses import entropy_threshold

    if parts.dist.active:
        entropies = torch.cat([torch.as_tensor(e) for e in parts.dist.gather(entropies.cpu())])
    return entropy_threshold(entropies, quantile)


def sync_state(parts: Any, state: Any) -> None:
    """Batch sizes an out-of-memory error halved on any rank are halved on all."""
    if not parts.dist.active:
        return
    rollout = state.rollout_batch_size if state.rollout_batch_size is not None else math.inf
    micro, roll = (-v for v in parts.dist.max([-state.micro_batch_size, -rollout]))
    roll = None if math.isinf(roll) else int(roll)
    if (int(micro), roll) != (state.micro_batch_size, state.rollout_batch_size):
        parts.tracker.warn(f"step {state.step}: another rank ran out of memory; every rank "
                           f"uses trainer.micro_batch_size={int(micro)} and rollout.batch_size="
                           f"{'null' if roll is None else roll} for the rest of the run")
    state.micro_batch_size, state.rollout_batch_size = int(micro), roll


def global_step_view(parts: Any, batch: Any, stats: Any, oom_retries: int,
                     peak_gb: float) -> tuple[Any, Any, int, float] | None:
    """The step as rank 0 logs it: every rank's completions, rewards and advantages in rank
    order, counts summed, timings the slowest rank's, peak memory the largest. None on the
    other ranks (they log nothing)."""
    from grpo_cli.trainer.step import merge_batches, pooled_reported

    dist = parts.dist
    if not dist.active:
        return batch, stats, oom_retries, peak_gb
    piece = (_to_cpu(batch), stats.advantages.cpu(), oom_retries, peak_gb,
             stats.time_logprob, stats.time_train)
    pieces = dist.gather(piece)
    if not dist.main:
        return None
    batches = [p[0] for p in pieces]
    merged = merge_batches(batches, parts.policy.tokenizer.pad_token_id)
    merged.time_generate = max(b.time_generate for b in batches)
    merged.time_reward = max(b.time_reward for b in batches)
    merged.errors = {k: sum(b.errors.get(k, 0) for b in batches) for k in batches[0].errors}
    merged.reported = pooled_reported(batches)
    merged.frac_zero_std = sum(b.frac_zero_std for b in batches) / len(batches)
    if batch.dynamic is not None:
        from grpo_cli.trainer.step import DynamicSampling

        merged.dynamic = DynamicSampling(
            max(b.dynamic.rounds for b in batches), sum(b.dynamic.filled for b in batches),
            sum(b.dynamic.prompts_sampled for b in batches))
    from dataclasses import replace

    stats = replace(stats, advantages=torch.cat([p[1] for p in pieces]),
                    time_logprob=max(p[4] for p in pieces), time_train=max(p[5] for p in pieces))
    return merged, stats, sum(p[2] for p in pieces), max(p[3] for p in pieces)


def _to_cpu(batch: Any) -> Any:
    from dataclasses import fields, replace

    from grpo_cli.rollout.engine import Rollout

    ro = batch.rollout
    cpu = Rollout(**{f.name: (getattr(ro, f.name).cpu() if torch.is_tensor(getattr(ro, f.name))
                              else getattr(ro, f.name)) for f in fields(Rollout)})
    return replace(batch, rollout=cpu, total=batch.total.cpu(), scored=batch.scored.cpu(),
                   components={k: v.cpu() for k, v in batch.components.items()})


class _NoBar:
    def update(self, n: int) -> None:
        pass


class RankTracker:
    """The tracker of ranks > 0: rank 0 alone writes metrics, samples, W&B, warnings and the
    console; the numbers it logs are every rank's (global_step_view)."""

    def log_step(self, step: int, metrics: dict) -> None:
        pass

    def log_samples(self, step: int, rows: list, write_file: bool = True) -> None:
        return None

    def log_eval(self, step: int, report: dict) -> dict:
        return {}

    @contextlib.contextmanager
    def rollout_progress(self, total: int) -> Iterator[_NoBar]:
        yield _NoBar()

    def warn(self, message: str, step: int | None = None) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def log_checkpoint(self, path: Any, step: int) -> None:
        pass

    def close(self, plot: bool = True) -> list:
        return []

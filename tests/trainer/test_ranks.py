"""What a data-parallel step shares (trainer/ranks.py), on stand-in ranks: the prompt split
and refills keep one global order, a batch that does not split is refused, OOM halvings
are taken by every rank."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from grpo_cli.errors import UserError
from grpo_cli.trainer.parts import RunState
from grpo_cli.trainer.ranks import (
    check_world,
    global_entropy_threshold,
    sync_state,
    take_prompts,
)
from grpo_cli.trainer.sampler import PromptSampler


@dataclass
class StandInDist:
    """One rank of a group whose collectives answer with the other ranks' given values."""
    rank: int
    world: int
    others: list = field(default_factory=list)  # what gather / max return, in rank order

    active = True

    def gather(self, obj):
        return self.others

    def max(self, values):
        return [max(v) for v in zip(*self.others)]


@dataclass
class Single:
    """A world of one (Dist's own answer when no group runs)."""
    rank: int = 0
    world: int = 1
    active = False


@dataclass
class Parts:
    dist: StandInDist
    sampler: PromptSampler
    tracker: object = None


def test_ranks_take_disjoint_slices_of_one_order_and_stay_in_step():
    single = PromptSampler(50, seed=3).take(7)
    # Round 1: 2 ranks x 2 prompts; refill: rank 0 short by 3, rank 1 full (0).
    parts = [Parts(StandInDist(r, 2), PromptSampler(50, seed=3)) for r in range(2)]
    first, refill = [], []
    for p in parts:
        p.dist.others = [2, 2]
        first.append(take_prompts(p, 2))
    for p, need in zip(parts, (3, 0)):
        p.dist.others = [3, 0]
        refill.append(take_prompts(p, need))
    assert first == [single[0:2], single[2:4]]
    assert refill == [single[4:7], []]
    assert parts[0].sampler.position == parts[1].sampler.position == 7  # the same position


def test_a_global_batch_that_does_not_split_is_refused():
    class Cfg:
        class trainer:
            prompts_per_step = 6

    check_world(Cfg, 1)
    check_world(Cfg, 3)
    with pytest.raises(UserError, match="prompts_per_step=6 does not split evenly over 4"):
        check_world(Cfg, 4)


def test_an_oom_halving_on_one_rank_is_taken_by_all():
    class Tracker:
        warnings: list = []

        def warn(self, message):
            self.warnings.append(message)

    class Cfg:
        class trainer:
            micro_batch_size, prompts_per_step = 8, 4

        class rollout:
            batch_size = None

    state = RunState.start(Cfg)
    # This rank is untouched; the other halved its micro-batch to 4 and its rollout to 8.
    parts = Parts(StandInDist(0, 2, others=[[-8, -float("inf")], [-4, -8]]), None, Tracker())
    sync_state(parts, state)
    assert (state.micro_batch_size, state.rollout_batch_size) == (4, 8)
    assert "another rank ran out of memory" in parts.tracker.warnings[0]


def test_the_entropy_threshold_is_over_every_ranks_tokens():
    # Rank 0 holds entropies [0.1, 0.2], rank 1 [0.3, 0.4, 0.5]. Top 0.5 of all five:
    # quantile 0.5 of [0.1 .. 0.5] = 0.3 on both ranks; rank 0 alone would say 0.15.
    import torch

    mine, theirs = torch.tensor([0.1, 0.2]), torch.tensor([0.3, 0.4, 0.5])
    for rank in (0, 1):
        dist = StandInDist(rank, 2, others=[mine, theirs])
        local = (mine, theirs)[rank]
        assert global_entropy_threshold(Parts(dist, None), local, 0.5) == pytest.approx(0.3)
    assert global_entropy_threshold(Parts(Single(), None), mine, 0.5) == pytest.approx(0.15)


def test_start_distributed_uses_the_configured_timeout_and_backend(monkeypatch):
    # What torchrun's environment and trainer.dist_timeout_s give init_process_group.
    import torch.distributed as td

    from grpo_cli.trainer import dist

    seen = {}
    monkeypatch.setattr(td, "is_initialized", lambda: False)
    monkeypatch.setattr(td, "init_process_group",
                        lambda backend, **kw: seen.update(backend=backend, **kw))
    monkeypatch.setattr(dist, "_elastic_store", lambda rank, world, timeout: {})
    for key, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(key, value)
    got = dist.start_distributed("cpu", 42.5)
    assert (got.rank, got.world, got.backend, got.main) == (1, 2, "gloo", False)
    assert seen["backend"] == "gloo" and seen["timeout"].total_seconds() == 42.5
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert dist.start_distributed("cpu", 42.5) is dist.SINGLE  # plain grpo: no group

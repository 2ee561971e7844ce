"""The logged metric names (trainer/metrics.py): reward components, accuracy, repetition, and
that every loss mean combine_metrics makes has its name there."""

import math

import pytest
import torch

from grpo_cli.algo.loss import combine_metrics
from grpo_cli.trainer.metrics import LOSS_MEANS, accuracy, repetition_rate, reward_metrics


def test_component_metrics_skip_not_applicable_samples():
    comps = {"correctness": torch.tensor([1.0, 0.0, 1.0, 0.0]),
             "tag_count": torch.tensor([0.5, float("nan"), 0.25, float("nan")])}
    m = reward_metrics(comps, {"correctness": 2})
    assert m["rewards/correctness/mean"] == 0.5
    assert m["rewards/correctness/std"] == 0.5  # population std of 1,0,1,0
    assert m["rewards/correctness/errors"] == 2.0
    assert m["rewards/tag_count/mean"] == pytest.approx(0.375)  # (0.5 + 0.25) / 2
    assert m["rewards/tag_count/errors"] == 0.0


def test_component_metrics_all_not_applicable_is_nan():
    m = reward_metrics({"x": torch.tensor([float("nan")] * 3)}, {})
    assert math.isnan(m["rewards/x/mean"])


def test_accuracy_is_the_share_graded_exactly_one():
    comps = {"correctness": torch.tensor([1.0, 0.0, 0.5, 1.0]), "format": torch.ones(4)}
    assert accuracy(comps, "correctness") == 0.5  # a partial 0.5 is not correct
    assert accuracy(comps, None) is None
    assert accuracy({"correctness": torch.zeros(0)}, "correctness") is None


def test_repetition_rate_counts_repeated_ngrams():
    ids = torch.tensor([[1, 2, 1, 2, 1, 2, 0], [1, 2, 3, 4, 5, 6, 7]])
    mask = torch.tensor([[1] * 6 + [0], [1] * 7])
    # row 0: 2-grams 12 21 12 21 12 -> 2 unique of 5 -> 0.6; row 1: 6 unique of 6 -> 0
    assert repetition_rate(ids, mask, n=2) == pytest.approx(0.3)


def test_every_loss_mean_is_named_in_metrics():
    sums = dict.fromkeys(("pg_loss", "kl_sum", "clip_low_sum", "clip_high_sum", "ratio_sum",
                          "is_weight_sum", "sampler_gap_sum"), torch.tensor(1.0))
    sums["num_tokens"] = torch.tensor(2.0)
    assert tuple(combine_metrics([sums])) == LOSS_MEANS

"""Reward metrics of the trained batch (used after dynamic sampling refills it)."""

import math

import pytest
import torch

from grpo_cli.trainer.step import component_metrics, repetition_rate


def test_component_metrics_skip_not_applicable_samples():
    comps = {"correctness": torch.tensor([1.0, 0.0, 1.0, 0.0]),
             "tag_count": torch.tensor([0.5, float("nan"), 0.25, float("nan")])}
    m = component_metrics(comps, {"correctness": 2})
    assert m["rewards/correctness/mean"] == 0.5
    assert m["rewards/correctness/std"] == 0.5  # population std of 1,0,1,0
    assert m["rewards/correctness/errors"] == 2.0
    assert m["rewards/tag_count/mean"] == pytest.approx(0.375)  # (0.5 + 0.25) / 2
    assert m["rewards/tag_count/errors"] == 0.0


def test_component_metrics_all_not_applicable_is_nan():
    m = component_metrics({"x": torch.tensor([float("nan")] * 3)}, {})
    assert math.isnan(m["rewards/x/mean"])


def test_repetition_rate_counts_repeated_ngrams():
    ids = torch.tensor([[1, 2, 1, 2, 1, 2, 0], [1, 2, 3, 4, 5, 6, 7]])
    mask = torch.tensor([[1] * 6 + [0], [1] * 7])
    # row 0: 2-grams 12 21 12 21 12 -> 2 unique of 5 -> 0.6; row 1: 6 unique of 6 -> 0
    assert repetition_rate(ids, mask, n=2) == pytest.approx(0.3)

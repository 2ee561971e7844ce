"""Hand-computed checks of grpo_cli.algo.advantages.

Shared case, G=3, two prompts: rewards [0, 3, 6 | 1, 1, 1].
Group 1: mean 3, deviations [-3, 0, 3], unbiased var (9+0+9)/2 = 9, std 3.
         rloo baselines: (3+6)/2=4.5, (0+6)/2=3, (0+3)/2=1.5 -> r - b = [-4.5, 0, 4.5].
Group 2: all equal -> advantages exactly 0 in every variant.
Batch:   mean 12/6 = 2, deviations [-2, 1, 4, -1, -1, -1], squares sum 4+1+16+1+1+1 = 24,
         unbiased var 24/5 = 4.8, std sqrt(4.8).
"""

import math

import pytest
import torch

from grpo_cli.algo.advantages import (
    BASELINES,
    SCALES,
    compute_advantages,
    decoupled_rewards,
    frac_zero_std,
    zero_std_mask,
)

REWARDS = [0.0, 3.0, 6.0, 1.0, 1.0, 1.0]
BATCH_STD = math.sqrt(4.8)

CASES = {
    # (scale, baseline): expected advantages (eps=0)
    ("group", "mean"): [-1.0, 0.0, 1.0, 0.0, 0.0, 0.0],  # [-3, 0, 3] / 3
    ("batch", "mean"): [-3 / BATCH_STD, 0.0, 3 / BATCH_STD, 0.0, 0.0, 0.0],
    ("none", "mean"): [-3.0, 0.0, 3.0, 0.0, 0.0, 0.0],
    ("group", "rloo"): [-1.5, 0.0, 1.5, 0.0, 0.0, 0.0],  # [-4.5, 0, 4.5] / 3
    ("batch", "rloo"): [-4.5 / BATCH_STD, 0.0, 4.5 / BATCH_STD, 0.0, 0.0, 0.0],
    ("none", "rloo"): [-4.5, 0.0, 4.5, 0.0, 0.0, 0.0],
}


@pytest.mark.parametrize(("scale", "baseline"), sorted(CASES))
def test_every_scale_and_baseline(scale: str, baseline: str) -> None:
    adv = compute_advantages(torch.tensor(REWARDS), 3, scale=scale, baseline=baseline, eps=0.0)
    torch.testing.assert_close(adv, torch.tensor(CASES[(scale, baseline)]))


def test_eps_is_added_to_std() -> None:
    # group [0, 3, 6], std 3: A = [-3, 0, 3] / (3 + 1) = [-0.75, 0, 0.75]
    adv = compute_advantages(torch.tensor([0.0, 3.0, 6.0]), 3, "group", "mean", eps=1.0)
    torch.testing.assert_close(adv, torch.tensor([-0.75, 0.0, 0.75]))


def test_rloo_hand_case_g2() -> None:
    # group [1, 3]: each baseline is the other reward -> A = [1-3, 3-1] = [-2, 2]
    adv = compute_advantages(torch.tensor([1.0, 3.0]), 2, "none", "rloo")
    torch.testing.assert_close(adv, torch.tensor([-2.0, 2.0]))


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("baseline", ["mean", "rloo"])
def test_zero_variance_groups_are_exactly_zero(scale: str, baseline: str) -> None:
    # 0.1 * 3 / 3 is not exactly 0.1 in float32 arithmetic; the mask makes it exactly 0,
    # and a batch of only flat groups (batch std 0, eps 0 -> 0/0) does not give NaN.
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.7, 0.7])
    adv = compute_advantages(rewards, 3, scale=scale, baseline=baseline, eps=0.0)
    assert torch.equal(adv, torch.zeros(6))


def test_group_size_one_gives_zero_not_nan() -> None:
    # G=1: every group is flat (unbiased std would be NaN) -> all advantages 0
    adv = compute_advantages(torch.tensor([1.0, 2.0]), 1, "group", "mean")
    assert torch.equal(adv, torch.zeros(2))


def test_zero_std_mask_and_fraction() -> None:
    rewards = torch.tensor(REWARDS)
    # group 1 [0, 3, 6] varies, group 2 [1, 1, 1] is flat
    assert zero_std_mask(rewards, 3).tolist() == [False, True]
    assert frac_zero_std(rewards, 3) == 0.5
    # three groups of 2: [1, 1] flat, [0, 1] varies, [2, 2] flat -> 2/3
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 2.0, 2.0])
    assert frac_zero_std(rewards, 2) == pytest.approx(2 / 3)


def test_unknown_variants_name_allowed_values() -> None:
    rewards = torch.tensor(REWARDS)
    with pytest.raises(ValueError, match="allowed: batch, group, none"):
        compute_advantages(rewards, 3, scale="std", baseline="mean")
    with pytest.raises(ValueError, match="allowed: mean, rloo"):
        compute_advantages(rewards, 3, scale="group", baseline="median")


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="multiple of num_generations"):
        compute_advantages(torch.tensor(REWARDS), 4)
    with pytest.raises(ValueError, match="rloo"):
        compute_advantages(torch.tensor([1.0, 2.0]), 1, "none", "rloo")


def test_unscored_completions_are_left_out_of_the_group() -> None:
    # Group [1, 0, 0(unscored), 1]: stats over the scored [1, 0, 1] only.
    # mean = 2/3, unbiased std = sqrt(((1/3)^2 * 2 + (2/3)^2) / 2) = sqrt(1/3) = 0.57735.
    # A = (r - 2/3) / 0.57735 -> [0.57735, -1.1547, 0 (unscored), 0.57735]. Counting the
    # unscored one as reward 0 would give mean 1/2 and A_3 = -0.866 instead.
    r = torch.tensor([1.0, 0.0, 0.0, 1.0])
    valid = torch.tensor([True, True, False, True])
    adv = compute_advantages(r, 4, scale="group", baseline="mean", eps=0.0, valid=valid)
    s = math.sqrt(1 / 3)
    assert torch.allclose(adv, torch.tensor([1 / 3 / s, -2 / 3 / s, 0.0, 1 / 3 / s]))
    # RLOO over the scored ones: b_0 = (0 + 1) / 2, b_1 = (1 + 1) / 2, b_3 = (1 + 0) / 2.
    adv = compute_advantages(r, 4, scale="none", baseline="rloo", valid=valid)
    assert torch.allclose(adv, torch.tensor([0.5, -1.0, 0.0, 0.5]))
    # Batch std over the scored rewards of the whole batch.
    adv = compute_advantages(r, 4, scale="batch", baseline="mean", eps=0.0, valid=valid)
    assert torch.allclose(adv, torch.tensor([1 / 3 / s, -2 / 3 / s, 0.0, 1 / 3 / s]))


def test_all_valid_is_the_same_as_no_mask() -> None:
    r = torch.tensor([0.3, 1.0, 0.0, 2.0, 1.0, 1.0, 5.0, 0.5])
    for scale in SCALES:
        for baseline in BASELINES:
            assert torch.allclose(
                compute_advantages(r, 4, scale=scale, baseline=baseline),
                compute_advantages(r, 4, scale=scale, baseline=baseline,
                                   valid=torch.ones(8, dtype=torch.bool)), atol=1e-6)


def test_a_group_with_fewer_than_two_scored_teaches_nothing() -> None:
    r = torch.tensor([1.0, 0.0, 0.0, 0.0])
    valid = torch.tensor([True, False, False, False])
    assert zero_std_mask(r, 4, valid).tolist() == [True]
    assert compute_advantages(r, 4, valid=valid).tolist() == [0.0] * 4


def test_gdpo_normalises_each_component_before_the_sum():
    # One group of 3: correctness a = [1, 0, 0] (w 1), format b = [1, 1, 0] (w 0.5).
    # a: mean 1/3, unbiased std sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3) = 0.57735
    #    -> [1.154701, -0.577350, -0.577350]
    # b: mean 2/3, std 0.57735 -> [0.577350, 0.577350, -1.154701], times 0.5
    # sum: [1.443376, -0.288675, -1.154701]
    comps = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])  # [3, 2]
    got = decoupled_rewards(comps, torch.tensor([1.0, 0.5]), 3, eps=1e-9)
    assert got.tolist() == pytest.approx([1.443376, -0.288675, -1.154701], abs=1e-5)
    # The weighted sum [1.5, 0.5, 0] normalised instead: mean 2/3, std sqrt(7/12) = 0.763763
    # -> [1.091089, -0.218218, -0.872872]: a different ranking of the gaps.
    total = compute_advantages(torch.tensor([1.5, 0.5, 0.0]), 3, eps=1e-9)
    assert total.tolist() == pytest.approx([1.091089, -0.218218, -0.872872], abs=1e-5)


def test_gdpo_leaves_out_what_does_not_apply_and_constant_components():
    # c = [1, 0, NaN]: rows 0-1 only: mean 0.5, std sqrt(0.5) = 0.707107 -> [0.7071, -0.7071]
    # and 0 for row 2; d = [2, 2, 2] is constant in the group: adds exactly 0.
    comps = torch.tensor([[1.0, 2.0], [0.0, 2.0], [float("nan"), 2.0]])  # [3, 2]
    got = decoupled_rewards(comps, torch.tensor([1.0, 3.0]), 3, eps=1e-9)
    assert got.tolist() == pytest.approx([0.707107, -0.707107, 0.0], abs=1e-5)
    # an unscored sample (valid False) is left out of every component and gets 0
    got = decoupled_rewards(comps, torch.tensor([1.0, 3.0]), 3, eps=1e-9,
                            valid=torch.tensor([True, True, False]))
    assert got[2].item() == 0.0

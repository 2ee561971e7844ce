"""Hand-computed checks of grpo_cli.algo.loss."""

import math

import pytest
import torch

from grpo_cli.algo.loss import (
    AdaptiveKLController,
    FixedKLController,
    LossSettings,
    aggregate,
    combine_metrics,
    grpo_loss,
    k3_kl,
)

LN2 = math.log(2.0)
EPS_LOW, EPS_HIGH = 0.2, 0.28
MODES = ["seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm"]


def test_k3_values() -> None:
    # d = ref - logp: d=0 -> 1 - 0 - 1 = 0; d=ln2 -> 2 - ln2 - 1 = 0.306853;
    # d=-ln2 -> 0.5 + ln2 - 1 = 0.193147
    logp = torch.zeros(3)
    ref = torch.tensor([0.0, LN2, -LN2])
    torch.testing.assert_close(k3_kl(logp, ref), torch.tensor([0.0, 1 - LN2, LN2 - 0.5]))
    assert (k3_kl(torch.randn(50), torch.randn(50)) >= 0).all()


def _single_token(rho: float, adv: float) -> tuple[float, float, dict]:
    """Loss, d loss / d logp, and combined metrics for one token with ratio rho."""
    logp = torch.tensor([[math.log(rho)]], requires_grad=True)  # [1, 1]
    old = torch.zeros(1, 1)  # [1, 1]
    loss, sums = grpo_loss(logp, old, None, torch.tensor([adv]), torch.ones(1, 1),
                           LossSettings(EPS_LOW, EPS_HIGH, 0.0, "token_mean",
                                        max_completion_length=1))
    loss.backward()
    return loss.item(), logp.grad.item(), combine_metrics([sums])


@pytest.mark.parametrize(
    ("rho", "adv", "expected_loss", "expected_grad", "low", "high"),
    [
        # A>0, rho=1.5 > 1.28: min(1.5, 1.28) -> clipped, l = -1.28, no gradient
        (1.5, 1.0, -1.28, 0.0, 0.0, 1.0),
        # A<0, rho=0.5 < 0.8: min(-0.5, -0.8) = -0.8 -> clipped, l = 0.8, no gradient
        (0.5, -1.0, 0.8, 0.0, 1.0, 0.0),
        # A<0, rho=1.5: min(-1.5, -1.28) = -1.5 -> unclipped, l = 1.5, dl/dlogp = -rho*A = 1.5
        (1.5, -1.0, 1.5, 1.5, 0.0, 0.0),
        # A>0, rho=0.5: min(0.5, 0.8) = 0.5 -> unclipped, l = -0.5, dl/dlogp = -0.5
        (0.5, 1.0, -0.5, -0.5, 0.0, 0.0),
        # inside the range, rho=1.1, A=2: l = -2.2, dl/dlogp = -2.2
        (1.1, 2.0, -2.2, -2.2, 0.0, 0.0),
    ],
)
def test_clipping(rho, adv, expected_loss, expected_grad, low, high) -> None:
    loss, grad, metrics = _single_token(rho, adv)
    assert loss == pytest.approx(expected_loss, abs=1e-6)
    assert grad == pytest.approx(expected_grad, abs=1e-6)
    assert metrics["clip_ratio/low"] == low
    assert metrics["clip_ratio/high"] == high
    assert metrics["clip_ratio"] == low + high
    assert metrics["ratio_mean"] == pytest.approx(rho)


# Per-token values with padding; padded positions hold garbage that must be ignored.
PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])
MASK = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        # seq means: (1+2+3)/3 = 2 and 4/1 = 4 -> (2+4)/2 = 3
        ("seq_mean_token_mean", 3.0),
        # (1+2+3+4) / 4 tokens = 2.5
        ("token_mean", 2.5),
        # 10 / (2 seqs * max_len 3) = 1.6667
        ("seq_mean_token_sum_norm", 10 / 6),
    ],
)
def test_aggregation_modes(mode: str, expected: float) -> None:
    assert aggregate(PER_TOKEN, MASK, mode, max_len=3).item() == pytest.approx(expected)


def test_aggregation_empty_sequences() -> None:
    per_token = torch.tensor([[1.0, 2.0], [5.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    # empty sequence counts as 0 but still counts: (1.5 + 0) / 2 = 0.75
    assert aggregate(per_token, mask, "seq_mean_token_mean", 2).item() == 0.75
    # no tokens at all: 0, not NaN
    assert aggregate(per_token, torch.zeros(2, 2), "token_mean", 2).item() == 0.0


def test_unknown_aggregation() -> None:
    with pytest.raises(ValueError, match="allowed: seq_mean_token_mean"):
        aggregate(PER_TOKEN, MASK, "sum", max_len=3)


# The loss variants (policy_losses.py) too: GSPO's sequence ratio, CISPO, SAPO, delta, mixed.
VARIANTS = [{}, dict(ratio_level="sequence"), dict(policy_loss="cispo"), dict(delta=1.5),
            dict(policy_loss="cispo", ratio_level="sequence"), dict(policy_loss="sapo"),
            dict(policy_loss="sapo", ratio_level="sequence", sapo_tau_pos=2.0)]


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_micro_batches_sum_to_full_batch(mode: str, variant: dict) -> None:
    torch.manual_seed(0)
    n, length = 5, 4
    logp = torch.randn(n, length, requires_grad=True)  # [5, 4]
    old = logp.detach() + 0.3 * torch.randn(n, length)  # [5, 4]
    ref = logp.detach() + 0.3 * torch.randn(n, length)  # [5, 4]
    adv = torch.randn(n)  # [5]
    mask = torch.rand(n, length) > 0.3  # [5, 4]
    mask[0] = False  # one empty sequence
    settings = LossSettings(epsilon_low=EPS_LOW, epsilon_high=EPS_HIGH, beta=0.05, loss_agg=mode,
                            max_completion_length=length, **variant)

    full, full_sums = grpo_loss(logp, old, ref, adv, mask, settings)
    (full_grad,) = torch.autograd.grad(full, logp)

    totals = dict(num_seqs=n, num_tokens=int(mask.sum()))
    micro_losses, parts = [], []
    for rows in (slice(0, 2), slice(2, 4), slice(4, 5)):
        loss, sums = grpo_loss(logp[rows], old[rows], ref[rows], adv[rows], mask[rows], settings,
                               **totals)
        micro_losses.append(loss)
        parts.append(sums)
    total = torch.stack(micro_losses).sum()
    (micro_grad,) = torch.autograd.grad(total, logp)

    torch.testing.assert_close(total, full)
    torch.testing.assert_close(micro_grad, full_grad)
    combined, whole = combine_metrics(parts), combine_metrics([full_sums])
    for key, value in whole.items():
        assert combined[key] == pytest.approx(value, abs=1e-6), key
    # aggregate() alone: micro-batch shares add up too
    per_token = torch.randn(n, length)
    shares = sum(
        aggregate(per_token[r], mask[r], mode, length, **totals) for r in (slice(0, 3), slice(3, 5))
    )
    torch.testing.assert_close(shares, aggregate(per_token, mask, mode, length))


def test_rho_one_loss_near_zero_but_gradient_not() -> None:
    # One optimisation pass: old = logp.detach() -> rho = 1, per-token loss = -A.
    # seq_mean_token_mean with A = [1, -1], L=2: ((-1) + (+1)) / 2 = 0.
    # d loss / d logp_it = -A_i / (L * N) = -A_i / 4 -> [[-0.25, -0.25], [0.25, 0.25]]
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    loss, _ = grpo_loss(logp, logp.detach(), None, torch.tensor([1.0, -1.0]), torch.ones(2, 2),
                        LossSettings(EPS_LOW, EPS_HIGH, 0.0, "seq_mean_token_mean",
                                     max_completion_length=2))
    loss.backward()
    assert loss.item() == 0.0
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.25, -0.25], [0.25, 0.25]]))


def test_kl_term_and_metric() -> None:
    # logp = 0, ref = ln2 (k3 = 1 - ln2 = 0.306853), A = 0 -> loss = beta * 0.306853
    logp = torch.zeros(1, 2)
    ref = torch.full((1, 2), LN2)
    loss, sums = grpo_loss(logp, logp, ref, torch.zeros(1), torch.ones(1, 2),
                           LossSettings(EPS_LOW, EPS_HIGH, 0.1, "token_mean",
                                        max_completion_length=2))
    assert loss.item() == pytest.approx(0.1 * (1 - LN2))
    metrics = combine_metrics([sums])
    assert metrics["kl"] == pytest.approx(1 - LN2)
    assert metrics["pg_loss"] == 0.0
    with pytest.raises(ValueError, match="needs ref_logp"):
        grpo_loss(logp, logp, None, torch.zeros(1), torch.ones(1, 2),
                  LossSettings(EPS_LOW, EPS_HIGH, 0.1, "token_mean", max_completion_length=2))


def test_adaptive_kl_controller() -> None:
    # KL 0.1 vs target 0.05: err = clip(1.0, -0.2, 0.2) = 0.2 -> beta 0.1 * (1 + 0.2*10/100)
    ctl = AdaptiveKLController(init_beta=0.1, target_kl=0.05, horizon=100)
    assert ctl.update(0.1, n_steps=10) == pytest.approx(0.102)
    # KL 0.025: err = clip(-0.5) = -0.2 -> 0.102 * 0.98 = 0.09996
    assert ctl.update(0.025, n_steps=10) == pytest.approx(0.09996)
    # KL 0.055: err = 0.1, unclipped -> 0.09996 * 1.01
    assert ctl.update(0.055, n_steps=10) == pytest.approx(0.09996 * 1.01)
    restored = AdaptiveKLController(init_beta=1.0, target_kl=0.05, horizon=100)
    restored.load_state_dict(ctl.state_dict())
    assert restored.beta == ctl.beta

    fixed = FixedKLController(0.04)
    assert fixed.update(10.0, n_steps=10) == 0.04
    assert fixed.state_dict() == {"beta": 0.04}


@pytest.mark.parametrize(("cap", "weight"), [(2.0, 1.25), (1.1, 1.1), (None, 1.0)])
def test_sampler_importance_weight(cap, weight) -> None:
    # Trainer prob 0.5, sampler prob 0.4: w = min(0.5 / 0.4, cap). rho = 1 (old = logp), so
    # the policy term is -A per token, times w: loss = -2 * w, d loss / d logp = -2 * w.
    # Second token: trainer 0.2, sampler 0.2 -> w = 1, masked out anyway.
    logp = torch.tensor([[math.log(0.5), math.log(0.2)]], requires_grad=True)  # [1, 2]
    sampler = torch.tensor([[math.log(0.4), math.log(0.2)]])  # [1, 2]
    mask = torch.tensor([[1.0, 0.0]])
    loss, sums = grpo_loss(logp, logp.detach(), None, torch.tensor([2.0]), mask,
                           LossSettings(EPS_LOW, EPS_HIGH, 0.0, "token_mean",
                                        max_completion_length=2, is_cap=cap), sampler_logp=sampler)
    loss.backward()
    assert loss.item() == pytest.approx(-2.0 * weight)
    assert logp.grad[0, 0].item() == pytest.approx(-2.0 * weight)
    assert logp.grad[0, 1].item() == 0.0
    metrics = combine_metrics([sums])
    assert metrics["sampler/is_weight"] == pytest.approx(weight)
    assert metrics["sampler/logp_gap"] == pytest.approx(math.log(0.5 / 0.4))


def test_sampler_weight_leaves_the_kl_term_alone() -> None:
    # One token, rho = 1, ref = logp + ln2 -> KL = 2 - ln2 - 1; w = e^0.1 (cap 2).
    # A = 0: the policy term is 0 whatever w is, so loss = beta * KL, unweighted.
    logp = torch.zeros(1, 1, requires_grad=True)
    loss, sums = grpo_loss(logp, logp.detach(), torch.full((1, 1), LN2), torch.zeros(1),
                           torch.ones(1, 1),
                           LossSettings(EPS_LOW, EPS_HIGH, 0.5, "token_mean",
                                        max_completion_length=1, is_cap=2.0),
                           sampler_logp=torch.full((1, 1), -0.1))
    assert loss.item() == pytest.approx(0.5 * (1 - LN2))
    assert combine_metrics([sums])["kl"] == pytest.approx(1 - LN2)
    # A = 1: policy term -1 * w = -e^0.1, KL term still 0.5 * (1 - ln2).
    loss, _ = grpo_loss(logp, logp.detach(), torch.full((1, 1), LN2), torch.ones(1),
                        torch.ones(1, 1),
                        LossSettings(EPS_LOW, EPS_HIGH, 0.5, "token_mean", max_completion_length=1,
                                     is_cap=2.0), sampler_logp=torch.full((1, 1), -0.1))
    assert loss.item() == pytest.approx(-math.exp(0.1) + 0.5 * (1 - LN2))


@pytest.mark.parametrize("mode", ["seq_mean_token_mean", "token_mean",
                                  "seq_mean_token_sum_norm"])
def test_huge_gaps_on_padding_cannot_make_nan(mode) -> None:
    # Position 1 is padding whose log-probs are garbage: a 1000-nat gap to old, ref and the
    # sampler there. exp(1000) = inf, and inf * 0 = NaN, unless the gap is masked first.
    # Token 0: logp = old = ref = sampler = -1 -> ratio 1, KL 0, w 1: loss = -A = -2 for
    # every mode (one token, one sequence, max_len 1 counts the real token only... for the
    # sum_norm mode max_len = 2: -2 / 2 = -1).
    logp = torch.tensor([[-1.0, 0.0]], requires_grad=True)  # [1, 2]
    far = torch.tensor([[-1.0, -1000.0]])  # [1, 2]
    mask = torch.tensor([[1.0, 0.0]])
    loss, sums = grpo_loss(logp, far, far, torch.tensor([2.0]), mask,
                           LossSettings(EPS_LOW, EPS_HIGH, 0.1, mode, max_completion_length=2,
                                        is_cap=2.0), sampler_logp=torch.tensor([[-1.0, 1000.0]]))
    loss.backward()
    assert loss.item() == pytest.approx(-1.0 if mode == "seq_mean_token_sum_norm" else -2.0)
    assert torch.isfinite(logp.grad).all() and logp.grad[0, 1].item() == 0.0
    metrics = combine_metrics([sums])
    assert all(math.isfinite(v) for v in metrics.values()), metrics


def test_pg_loss_is_averaged_over_updates() -> None:
    # Two updates (e.g. num_iterations=2), each one micro-batch with pg_loss -2: the step's
    # pg_loss is their mean, -2, like the logged loss; not their sum, -4.
    logp = torch.zeros(1, 1)
    _, sums = grpo_loss(logp, logp, None, torch.tensor([2.0]), torch.ones(1, 1),
                        LossSettings(EPS_LOW, EPS_HIGH, 0.0, "token_mean", max_completion_length=1))
    assert combine_metrics([sums, sums], num_updates=2)["pg_loss"] == pytest.approx(-2.0)


def test_pg_loss_equals_loss_without_kl_even_with_sampler_weights() -> None:
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.1]]))  # [1, 3]
    loss, sums = grpo_loss(logp, logp, None, torch.tensor([1.5]), torch.ones(1, 3),
                           LossSettings(EPS_LOW, EPS_HIGH, 0.0, "seq_mean_token_mean",
                                        max_completion_length=3, is_cap=2.0),
                           sampler_logp=logp - 0.2)
    assert combine_metrics([sums])["pg_loss"] == pytest.approx(loss.item())


def test_no_sampler_logprobs_means_weight_one() -> None:
    logp = torch.zeros(1, 3)
    _, sums = grpo_loss(logp, logp, None, torch.ones(1), torch.ones(1, 3),
                        LossSettings(EPS_LOW, EPS_HIGH, 0.0, "token_mean", max_completion_length=3))
    metrics = combine_metrics([sums])
    assert metrics["sampler/is_weight"] == 1.0 and metrics["sampler/logp_gap"] == 0.0


def test_no_counted_token_leaves_the_token_means_out() -> None:
    # Every completion masked (e.g. all truncated under mask_truncated): pg_loss 0 is a value,
    # but kl, clip ratios, ratio_mean and the sampler means were not measured at all.
    logp = torch.zeros(2, 3)
    _, sums = grpo_loss(logp, logp, logp, torch.ones(2), torch.zeros(2, 3),
                        LossSettings(EPS_LOW, EPS_HIGH, 0.1, "token_mean", max_completion_length=3,
                                     is_cap=2.0), sampler_logp=logp)
    assert combine_metrics([sums]) == {"pg_loss": 0.0}


def test_entropy_bonus() -> None:
    # rho = 1, A = 0: the policy term is 0. Entropies [1, 2, 3] (4 on the padded 4th token,
    # ignored), entropy_coef 0.1, token_mean: loss = -0.1 * (1 + 2 + 3) / 3 = -0.2;
    # d loss / d H_t = -0.1 / 3 on the real tokens, 0 on the pad; pg_loss stays 0.
    logp = torch.zeros(1, 4)
    ent = torch.tensor([[1.0, 2.0, 3.0, 4.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    settings = LossSettings(EPS_LOW, EPS_HIGH, 0.0, "token_mean", max_completion_length=4,
                            entropy_coef=0.1)
    loss, sums = grpo_loss(logp, logp, None, torch.zeros(1), mask, settings, entropy=ent)
    loss.backward()
    assert loss.item() == pytest.approx(-0.2)
    torch.testing.assert_close(ent.grad, torch.tensor([[-0.1 / 3] * 3 + [0.0]]))
    assert combine_metrics([sums])["pg_loss"] == 0.0
    # micro-batches: the shares of two one-sequence halves add up to the whole
    ent2 = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.0, 0.0]])
    mask2 = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    whole, _ = grpo_loss(torch.zeros(2, 4), torch.zeros(2, 4), None, torch.zeros(2), mask2,
                         settings, entropy=ent2)
    halves = [grpo_loss(torch.zeros(1, 4), torch.zeros(1, 4), None, torch.zeros(1),
                        mask2[r], settings, entropy=ent2[r], num_seqs=2, num_tokens=5)[0]
              for r in (slice(0, 1), slice(1, 2))]
    assert whole.item() == pytest.approx(-0.1 * 7 / 5)
    assert sum(h.item() for h in halves) == pytest.approx(whole.item())
    with pytest.raises(ValueError, match="needs the token entropies"):
        grpo_loss(logp, logp, None, torch.zeros(1), mask, settings)

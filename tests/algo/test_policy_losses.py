"""Hand-computed checks of the loss variants: GSPO's sequence ratio, CISPO, SAPO, INTELLECT-2's
delta, the high-entropy token selection (grpo_cli.algo.policy_losses, through grpo_loss)."""

import math

import pytest
import torch

from grpo_cli.algo.loss import LossSettings, combine_metrics, grpo_loss
from grpo_cli.algo.policy_losses import entropy_threshold, high_entropy_mask

LN2 = math.log(2.0)


def _run(log_ratio, adv, *, agg="seq_mean_token_mean", mask=None, eps=(0.2, 0.28),
         logp=(-1.0, -2.0, -3.0), **variant):
    """One sequence of 3 tokens: loss, d loss / d logp, combined metrics."""
    logp_t = torch.tensor([list(logp)], requires_grad=True)  # [1, 3]
    old = logp_t.detach() - torch.tensor([list(log_ratio)])  # [1, 3]: logp - old = log_ratio
    mask_t = torch.ones(1, 3) if mask is None else torch.tensor([mask])  # [1, 3]
    settings = LossSettings(eps[0], eps[1], 0.0, agg, max_completion_length=3, **variant)
    loss, sums = grpo_loss(logp_t, old, None, torch.tensor([adv]), mask_t, settings)
    loss.backward()
    return loss.item(), logp_t.grad[0].tolist(), combine_metrics([sums])


def test_gspo_ratio_is_the_geometric_mean_and_the_gradient_flows_per_token():
    # log-ratios [0.3, 0, -0.6]: log s = mean = -0.1, s = e^-0.1 = 0.904837 on every token,
    # inside [0.8, 1.28]. A = 1: l_t = -s, seq-mean token-mean -> loss = -0.904837.
    # d loss / d logp_t = -s * A / |y| = -0.904837 / 3 = -0.301612 on every token.
    s = math.exp(-0.1)
    loss, grad, metrics = _run([0.3, 0.0, -0.6], 1.0, ratio_level="sequence")
    assert loss == pytest.approx(-s)
    assert grad == pytest.approx([-s / 3] * 3)
    assert metrics["ratio_mean"] == pytest.approx(s)
    # The token ratio instead: rho = [e^0.3 = 1.349859 (clipped: no grad), 1, e^-0.6 = 0.548812]
    # -> loss = -(1.28 + 1 + 0.548812) / 3 = -0.942937, grad [0, -1/3, -0.548812/3].
    loss, grad, _ = _run([0.3, 0.0, -0.6], 1.0, ratio_level="token")
    assert loss == pytest.approx(-(1.28 + 1 + math.exp(-0.6)) / 3)
    assert grad == pytest.approx([0.0, -1 / 3, -math.exp(-0.6) / 3])


@pytest.mark.parametrize(("log_ratio", "adv", "loss", "low", "high"), [
    # mean log-ratio 0.001: s = 1.0010005 > 1 + 4e-4, A = 1 -> l = -1.0004, no gradient
    ([0.003, 0.0, 0.0], 1.0, -(1 + 4e-4), 0.0, 1.0),
    # mean -0.001: s = 0.9990005 < 1 - 3e-4, A = -1 -> min(-0.999, -0.9997) = -0.9997, no grad
    ([-0.003, 0.0, 0.0], -1.0, 1 - 3e-4, 1.0, 0.0),
])
def test_gspo_clips_the_whole_sequence(log_ratio, adv, loss, low, high):
    got, grad, metrics = _run(log_ratio, adv, eps=(3e-4, 4e-4), ratio_level="sequence")
    assert got == pytest.approx(loss)
    assert grad == [0.0, 0.0, 0.0]  # every token of a clipped sequence
    # every token counts in the clip share (all 3 carry the sequence's ratio)
    assert (metrics["clip_ratio/low"], metrics["clip_ratio/high"]) == (low, high)
    # token level with the same numbers: only token 0 (rho = e^+-0.003) is clipped
    _, grad, _ = _run(log_ratio, adv, eps=(3e-4, 4e-4), ratio_level="token")
    assert grad[0] == 0.0 and grad[1] == pytest.approx(-adv / 3)


def test_gspo_ratio_ignores_padding():
    # mask [1, 1, 0]: log s = (0.2 + 0.4) / 2 = 0.3 (the garbage 50 at the pad is left out);
    # s = e^0.3 = 1.349859 > 1.28 with A = -1: min(-1.349859, -1.28) -> unclipped, l = s.
    # loss = s (mean over the 2 real tokens), d loss / d logp = -A * s / 2 on the real ones.
    s = math.exp(0.3)
    loss, grad, _ = _run([0.2, 0.4, 50.0], -1.0, mask=[1.0, 1.0, 0.0], ratio_level="sequence")
    assert loss == pytest.approx(s)
    assert grad == pytest.approx([s / 2, s / 2, 0.0])


def test_cispo_keeps_every_tokens_gradient():
    # rho = [0.5, 1, 2], eps_low = 1 (floor 0), eps_high 0.28 -> w = sg([0.5, 1, 1.28]).
    # A = 2, logp = [-1, -2, -3]: l_t = -w A logp = [1, 4, 7.68]; token_mean -> 12.68 / 3.
    # d loss / d logp_t = -w_t A / 3 = [-1/3, -2/3, -2.56/3]: token 2 keeps its gradient.
    loss, grad, metrics = _run([-LN2, 0.0, LN2], 2.0, agg="token_mean", eps=(1.0, 0.28),
                               policy_loss="cispo")
    assert loss == pytest.approx(12.68 / 3)
    assert grad == pytest.approx([-1 / 3, -2 / 3, -2.56 / 3])
    assert (metrics["clip_ratio/low"], metrics["clip_ratio/high"]) == (0.0, pytest.approx(1 / 3))
    # PPO's clip drops token 2's gradient instead: rho = 2 > 1.28 with A > 0.
    _, grad, _ = _run([-LN2, 0.0, LN2], 2.0, agg="token_mean", eps=(0.2, 0.28))
    assert grad == pytest.approx([-1 / 3, -2 / 3, 0.0])


def test_cispo_lower_bound_when_set():
    # eps_low 0.2: w = [0.8, 1, 1.28]; A = -1: l_t = w logp = [-0.8, -2, -3.84] -> mean
    # -6.64 / 3; grad = w / 3 (A < 0 pushes logp down); token 0 counts as clipped low.
    loss, grad, metrics = _run([-LN2, 0.0, LN2], -1.0, agg="token_mean", policy_loss="cispo")
    assert loss == pytest.approx(-6.64 / 3)
    assert grad == pytest.approx([0.8 / 3, 1 / 3, 1.28 / 3])
    assert metrics["clip_ratio/low"] == pytest.approx(1 / 3)


def test_sapo_soft_gate_positive_advantage():
    # rho = [1, 2, 0.5], A = 1 -> tau_pos = 1: sigma = sigmoid(rho - 1) = [0.5, 0.731059,
    # 0.377541], f = 4 sigma = [2, 2.924234, 1.510163], l = -f A; seq-mean token-mean:
    # loss = -(2 + 2.924234 + 1.510163) / 3 = -2.144799.
    # d l / d logp = -A * 4 sigma (1 - sigma) * rho: weights [1, 0.786448, 0.940015] times rho
    # -> [-1, -1.572895, -0.470007], / 3 -> [-0.333333, -0.524298, -0.156669]. At rho = 1 the
    # weight is exactly GRPO's; rho = 2 (the clip would drop it) keeps a damped gradient.
    loss, grad, metrics = _run([0.0, LN2, -LN2], 1.0, policy_loss="sapo")
    assert loss == pytest.approx(-2.144799, abs=1e-6)
    assert grad == pytest.approx([-1 / 3, -0.524298, -0.156669], abs=1e-6)
    # a soft gate clips nothing: the clip ratios are 0; the ratio is logged as it is
    assert (metrics["clip_ratio/low"], metrics["clip_ratio/high"]) == (0.0, 0.0)
    assert metrics["ratio_mean"] == pytest.approx(3.5 / 3)


def test_sapo_soft_gate_negative_advantage_uses_tau_neg():
    # rho = [1, 2, 0.5], A = -1 -> tau_neg = 1.05: sigma = sigmoid(1.05 (rho - 1)) = [0.5,
    # 0.740775, 0.371684], f = sigma * 4 / 1.05 = [1.904762, 2.822000, 1.415938], l = f;
    # loss = (1.904762 + 2.822 + 1.415938) / 3 = 2.047567.
    # 4 sigma (1 - sigma) = [1, 0.768110, 0.934140], times rho and -A = 1 -> [1, 1.536220,
    # 0.467070], / 3 -> [0.333333, 0.512073, 0.155690].
    loss, grad, _ = _run([0.0, LN2, -LN2], -1.0, policy_loss="sapo")
    assert loss == pytest.approx(2.047567, abs=1e-6)
    assert grad == pytest.approx([1 / 3, 0.512073, 0.155690], abs=1e-6)
    # tau_neg = tau_pos = 1 instead: the A > 0 case mirrored (same gate, opposite sign)
    loss, grad, _ = _run([0.0, LN2, -LN2], -1.0, policy_loss="sapo", sapo_tau_neg=1.0)
    assert loss == pytest.approx(2.144799, abs=1e-6)
    assert grad == pytest.approx([1 / 3, 0.524298, 0.156669], abs=1e-6)


def test_delta_caps_negative_advantage_ratios():
    # rho = [3, 1.5, 0.5], A = -1, clip [0.8, 1.28], delta 2:
    # token 0: min(min(3, 2) * -1, 1.28 * -1) = -2 -> l = 2, capped: no gradient
    # token 1: min(-1.5, -1.28) = -1.5 -> l = 1.5, d l / d logp = -A rho = 1.5
    # token 2: min(-0.5, -0.8) = -0.8 -> l = 0.8, clipped low: no gradient
    # token_mean: loss = 4.3 / 3, grad = [0, 0.5, 0]
    log_ratio = [math.log(3.0), math.log(1.5), math.log(0.5)]
    loss, grad, _ = _run(log_ratio, -1.0, agg="token_mean", delta=2.0)
    assert loss == pytest.approx(4.3 / 3)
    assert grad == pytest.approx([0.0, 0.5, 0.0])
    # no delta: token 0 gives l = 3 and gradient 3 / 3 = 1
    loss, grad, _ = _run(log_ratio, -1.0, agg="token_mean")
    assert loss == pytest.approx(5.3 / 3)
    assert grad == pytest.approx([1.0, 0.5, 0.0])
    # A > 0: the upper clip 1.28 < delta binds first, delta changes nothing:
    # l = -[min(2, 1.28), min(1.5, 1.28), min(0.5, 0.8)] = -[1.28, 1.28, 0.5] -> -3.06 / 3,
    # grad = [0, 0, -0.5 / 3] with and without delta
    for delta in (2.0, None):
        loss, grad, _ = _run(log_ratio, 1.0, agg="token_mean", delta=delta)
        assert loss == pytest.approx(-3.06 / 3)
        assert grad == pytest.approx([0.0, 0.0, -0.5 / 3])


def test_single_pass_gspo_and_clip_are_the_same():
    # old = logp.detach(): s = rho = 1, so GSPO's loss and gradient are GRPO's.
    logp = torch.randn(2, 3, requires_grad=True)
    adv, mask = torch.tensor([1.0, -0.5]), torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    grads = []
    for level in ("token", "sequence"):
        loss, _ = grpo_loss(logp, logp.detach(), None, adv, mask,
                            LossSettings(3e-4, 4e-4, 0.0, "seq_mean_token_mean", 3,
                                         ratio_level=level))
        grads.append(torch.autograd.grad(loss, logp)[0])
    torch.testing.assert_close(grads[0], grads[1])


def test_unknown_variant_names_the_allowed_ones():
    logp = torch.zeros(1, 1)
    with pytest.raises(ValueError, match="unknown policy loss 'ppo'; allowed: cispo, clip, sapo"):
        grpo_loss(logp, logp, None, torch.ones(1), torch.ones(1, 1),
                  LossSettings(0.2, 0.2, 0.0, "token_mean", 1, policy_loss="ppo"))
    with pytest.raises(ValueError, match="unknown ratio level 'group'; allowed: sequence"):
        grpo_loss(logp, logp, None, torch.ones(1), torch.ones(1, 1),
                  LossSettings(0.2, 0.2, 0.0, "token_mean", 1, ratio_level="group"))


@pytest.mark.parametrize(("quantile", "threshold", "keep"), [
    # sorted [0.1, 0.5, 0.9]; quantile(1 - q) interpolates at position (1 - q) * 2:
    # q = 1/3 -> 1.3333: 0.5 + 0.3333 * 0.4 = 0.633333 -> keeps 0.9 only
    (1 / 3, 0.5 + 0.4 / 3, [False, False, True]),
    # q = 0.5 -> position 1: 0.5, ties kept -> 0.5 and 0.9
    (0.5, 0.5, [False, True, True]),
    # q = 1 -> position 0: 0.1 -> every token
    (1.0, 0.1, [True, True, True]),
])
def test_high_entropy_tokens(quantile, threshold, keep):
    ent = torch.tensor([[0.9, 0.1, 0.5]])  # [1, 3]
    got = entropy_threshold(ent.flatten(), quantile)
    assert got == pytest.approx(threshold)
    # order as given: [0.9, 0.1, 0.5]
    want = [keep[2], keep[0], keep[1]]
    assert high_entropy_mask(ent, torch.ones(1, 3), got)[0].tolist() == want
    assert entropy_threshold(torch.zeros(0), quantile) == math.inf  # no token: none kept


def test_policy_mask_drops_the_policy_term_but_not_kl_or_counts():
    # rho = 1, A = 1: pg per token -1; only tokens 1 and 2 keep it. ref = logp + ln2 on
    # every token: KL = 1 - ln2 = 0.306853 each, beta 0.1. token_mean over all 3 tokens:
    # loss = (0 - 1 - 1) / 3 + 0.1 * 0.306853 = -0.666667 + 0.030685 = -0.635981.
    logp = torch.zeros(1, 3, requires_grad=True)
    keep = torch.tensor([[False, True, True]])
    loss, sums = grpo_loss(logp, logp.detach(), torch.full((1, 3), LN2), torch.ones(1),
                           torch.ones(1, 3), LossSettings(0.2, 0.28, 0.1, "token_mean", 3),
                           policy_mask=keep)
    loss.backward()
    assert loss.item() == pytest.approx(-2 / 3 + 0.1 * (1 - LN2))
    # d/dlogp: policy -A rho / 3 on kept tokens; KL d(e^d - d - 1)/dlogp = -(e^d - 1) = -1
    # at d = ln2, times beta / 3 = -0.033333 everywhere
    assert logp.grad[0].tolist() == pytest.approx([-0.1 / 3, -1 / 3 - 0.1 / 3, -1 / 3 - 0.1 / 3])
    assert combine_metrics([sums])["pg_loss"] == pytest.approx(-2 / 3)

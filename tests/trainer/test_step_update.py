"""One update through the real step code (step.update / step._accumulate) on a tiny
LoRA model: micro-batch sizes, metrics over several updates, the reference when starting from
an adapter, unscored completions and mixed sampler log-probs."""

from __future__ import annotations

import math

import pytest
import torch
from step_run import G, Run, make_run, scored_batch, train_on_batch

from grpo_cli.policy.model import save_policy
from grpo_cli.rollout.engine import concat_rollouts
from grpo_cli.trainer.step import ScoredBatch, _accumulate


def _grads(run: Run, batch: ScoredBatch, micro: int,
           old_all: torch.Tensor | None = None) -> list[torch.Tensor]:
    from grpo_cli.algo.advantages import compute_advantages

    run.optimizer.zero_grad(set_to_none=True)
    run.state.micro_batch_size = micro
    adv = compute_advantages(batch.total, G)
    rows = torch.arange(len(batch.total))
    run.policy.model.train()
    _accumulate(run.parts, run.state, batch.rollout, rows, adv,
                batch.rollout.completion_mask.float(), old_all, None, 0.0, with_entropy=False)
    return [p.grad.clone() for p in run.params]


@pytest.mark.parametrize("agg", ["seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm"])
def test_any_micro_batch_size_gives_the_whole_batch_gradient(tiny_llama_path, agg):
    # 8 sequences: micro-batches of 3 (3 + 3 + 2, not a divisor) and 16 (more than the
    # batch: the whole batch) give the gradient of one pass over all 8.
    run = make_run(tiny_llama_path, f"algo.loss_agg={agg}", "algo.beta=0",
                         "trainer.micro_batch_size=16")
    batch = scored_batch(run)
    whole = _grads(run, batch, 8)
    for micro in (3, 16):
        for a, b in zip(whole, _grads(run, batch, micro)):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-4), micro


@pytest.mark.parametrize("variant", [["algo=gspo"], ["algo=cispo"], ["algo.delta=1.5"],
                                     ["algo.entropy_coef=0.05"]], ids=lambda v: v[0])
def test_loss_variants_keep_micro_batches_exact_off_policy(tiny_llama_path, variant):
    # Old log-probs moved by noise (ratios off 1, some clipped, GSPO's sequences included):
    # micro-batches of 3 (3 + 3 + 2) and 1 give the gradient of one pass over all 8 (the
    # entropy bonus's gradient through the chunked log-softmax included).
    from grpo_cli.trainer.step import _all_logprobs

    run = make_run(tiny_llama_path, *variant, "algo.beta=0", "algo.epsilon_low=0.1",
                   "algo.epsilon_high=0.1", "trainer.micro_batch_size=16")
    batch = scored_batch(run)
    torch.manual_seed(1)
    old = _all_logprobs(run.policy.model, batch.rollout, 8, 1.0)  # [8, L]
    old = old + 0.2 * torch.randn_like(old) * batch.rollout.completion_mask  # [8, L]
    whole = _grads(run, batch, 8, old)
    assert any(g.abs().sum() > 0 for g in whole)
    for micro in (3, 1):
        for a, b in zip(whole, _grads(run, batch, micro, old)):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-4), micro


def test_micro_batch_larger_than_the_batch_composes_and_trains(tiny_llama_path):
    run = make_run(tiny_llama_path, "algo.beta=0", "trainer.micro_batch_size=16",
                         "trainer.prompts_per_step=2")
    metrics, _, skipped = train_on_batch(run, scored_batch(run))
    assert not skipped and math.isfinite(metrics["loss"])


@pytest.mark.parametrize("extra", [["algo.num_iterations=2"],
                                   ["trainer.micro_batch_size=3", "trainer.grad_accum_steps=1"],
                                   ["algo.num_iterations=3", "trainer.micro_batch_size=4",
                                    "trainer.grad_accum_steps=1"]])
def test_pg_loss_equals_loss_without_kl_for_any_number_of_updates(tiny_llama_path, extra):
    run = make_run(tiny_llama_path, "algo.beta=0", *extra)
    metrics, _, _ = train_on_batch(run, scored_batch(run))
    assert metrics["pg_loss"] == pytest.approx(metrics["loss"], rel=1e-5, abs=1e-7)


def test_unscored_completions_get_advantage_zero(tiny_llama_path):
    run = make_run(tiny_llama_path, "algo.beta=0", "algo.scale_rewards=none")
    # Completion 1 of group 0 could not be scored (its reward 0 is a fallback).
    scored = [True, False, True, True] + [True] * 4
    _, adv, _ = train_on_batch(run, scored_batch(run, scored=scored))
    # Group 0's scored rewards [1, 0.5, 0]: mean 0.5 -> [0.5, 0 (unscored), 0, -0.5].
    assert adv[:4].tolist() == pytest.approx([0.5, 0.0, 0.0, -0.5])
    assert adv[4:].tolist() == pytest.approx([0.625, -0.375, 0.125, -0.375])


def test_reference_is_the_starting_adapter(tiny_llama_path, tmp_path):
    # An adapter that changes the outputs, saved and loaded as the starting point.
    start = make_run(tiny_llama_path, "algo.beta=0")
    folder = save_policy(start.policy, tmp_path / "adapter")
    run = make_run(tiny_llama_path, "algo.beta=0.1", adapter_path=folder)
    assert "starting adapter" in run.policy.reference_kind
    metrics, _, _ = train_on_batch(run, scored_batch(run))
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-7)  # step 0: policy == reference
    # After the update the reference is still the start, not the trained adapter, and the
    # trained adapter came back from the reference pass untouched.
    trained = [p.detach().clone() for p in run.params]
    metrics, _, _ = train_on_batch(run, scored_batch(run, seed=1))
    assert metrics["kl"] > 0
    ids = torch.tensor([[5, 6, 7, 8]])
    with run.policy.reference() as ref:
        ref_logits = ref(input_ids=ids).logits
    with torch.no_grad():
        start_logits = start.policy.model(input_ids=ids).logits
        with start.policy.model.disable_adapter():
            bare_logits = start.policy.model(input_ids=ids).logits
    assert torch.allclose(ref_logits, start_logits, atol=1e-5)
    assert not torch.allclose(ref_logits, bare_logits, atol=1e-3)
    assert all(not torch.equal(a, b) for a, b in zip(trained, run.params))


def test_a_loaded_adapters_dropout_is_switched_off(tiny_llama_path, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.5,
                                           target_modules=["q_proj", "v_proj"]))
    peft.save_pretrained(tmp_path / "drop")
    run = make_run(tiny_llama_path, "algo.beta=0", "algo.num_iterations=2",
                         adapter_path=tmp_path / "drop")
    assert not any(isinstance(m, torch.nn.Dropout) for m in run.policy.model.modules())
    metrics, _, _ = train_on_batch(run, scored_batch(run))
    # The first update's ratio is exactly 1 (old = this policy, no random masks); the second
    # moves a little. With dropout 0.5 it was far from 1 from the start.
    assert abs(metrics["ratio_mean"] - 1.0) < 0.05


def test_mixed_sampler_logprobs_keep_per_row_correction(tiny_llama_path):
    run = make_run(tiny_llama_path, "algo.beta=0")
    merged = scored_batch(run)
    plain = scored_batch(run, seed=3)
    merged.rollout.sampler_logp = torch.where(merged.rollout.completion_mask.bool(),
                                              torch.full_like(merged.rollout.completion_mask,
                                                              -50.0, dtype=torch.float32),
                                              torch.zeros(()))
    ro = concat_rollouts([merged.rollout.select(list(range(4))),
                          plain.rollout.select(list(range(4)))], 0)
    assert ro.sampler_logp is not None
    assert torch.isnan(ro.sampler_logp[4:]).all() and not torch.isnan(ro.sampler_logp[:4]).any()
    batch = ScoredBatch([0, 1], ro, torch.tensor([1.0, 0.0, 0.5, 0.0] * 2), {}, {},
                        torch.ones(8, dtype=torch.bool))
    metrics, _, _ = train_on_batch(run, batch)
    # Rows 0-3: sampler log-prob -50, so w = min(exp(old + 50), 2) = 2; rows 4-7: the
    # trainer's own draw, w = 1. The token-weighted mean lies strictly between.
    tokens = ro.completion_mask.float().sum(1)
    want = float((2 * tokens[:4].sum() + tokens[4:].sum()) / tokens.sum())
    assert metrics["sampler/is_weight"] == pytest.approx(want, rel=1e-5)
    assert all(math.isfinite(v) for v in metrics.values())


def test_kl_is_logged_only_when_a_reference_ran(tiny_llama_path):
    run = make_run(tiny_llama_path, "algo.beta=0")
    metrics, _, _ = train_on_batch(run, scored_batch(run))
    assert "kl" not in metrics and "sampler/is_weight" in metrics
    run = make_run(tiny_llama_path, "algo.beta=0.1")
    metrics, _, _ = train_on_batch(run, scored_batch(run))
    assert metrics["kl"] >= 0.0


def test_top_entropy_quantile_keeps_the_batchs_top_tokens(tiny_llama_path):
    # q = 0.25: one threshold over the optimizer step's completion tokens (the sampling
    # policy's entropies), so about a quarter of them keep the policy term, whatever the
    # micro-batch; the step trains and logs finite numbers.
    from grpo_cli.trainer.step import _all_logprobs, _keep_high_entropy

    run = make_run(tiny_llama_path, "algo.beta=0", "algo.top_entropy_quantile=0.25",
                   "trainer.micro_batch_size=3")
    batch = scored_batch(run)
    mask = batch.rollout.completion_mask.float()  # [8, L]
    _, ent = _all_logprobs(run.policy.model, batch.rollout, 8, 1.0, with_entropy=True)
    keep = _keep_high_entropy(run.parts, ent, mask, torch.arange(8))  # [8, L]
    tokens = int(mask.sum())
    assert not (keep & (mask == 0)).any()
    assert abs(int(keep.sum()) - 0.25 * tokens) <= 1
    assert ent[keep].min() >= ent[(mask > 0) & ~keep].max()
    metrics, _, skipped = train_on_batch(run, batch)
    assert not skipped and all(math.isfinite(v) for v in metrics.values())


def test_gdpo_aggregation_takes_the_advantages_from_normalised_components(tiny_llama_path):
    # reward=math: correctness (weight 1) and format (weight 0.1). Group 0: correctness
    # [1, 0, 0, 0] and format [1, 1, 1, 0]; group 1 the same. Each normalised in its group
    # (unbiased std 0.5 for both): correctness [1.5, -0.5, -0.5, -0.5], format
    # [0.5, 0.5, 0.5, -1.5] * 0.1 -> [1.55, -0.45, -0.45, -0.65]; then algo.scale_rewards=none
    # takes the group mean (0) off: the same numbers. The weighted total [1.1, 0.1, 0.1, 0]
    # would give [0.775, -0.225, -0.225, -0.325].
    from grpo_cli.algo.advantages import compute_advantages

    run = make_run(tiny_llama_path, "algo.beta=0", "algo.scale_rewards=none",
                   "reward.aggregation=normalize_then_sum")
    batch = scored_batch(run, rewards=[1.1, 0.1, 0.1, 0.0] * 2)
    batch.components = {"correctness": torch.tensor([1.0, 0.0, 0.0, 0.0] * 2),
                        "format": torch.tensor([1.0, 1.0, 1.0, 0.0] * 2)}
    _, adv, skipped = train_on_batch(run, batch)
    assert not skipped
    assert adv.tolist() == pytest.approx([1.55, -0.45, -0.45, -0.65] * 2, abs=1e-3)
    summed = compute_advantages(batch.total, G, scale="none")
    assert summed.tolist() == pytest.approx([0.775, -0.225, -0.225, -0.325] * 2, abs=1e-5)

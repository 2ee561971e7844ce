"""Data parallelism on fixed completions: the real step.update on 1 rank and on 2 gloo ranks
(each with half of the groups) gives the same gradient, for every loss aggregation and the
loss variants (GSPO off-policy; CISPO with the entropy bonus and top-entropy tokens), with one
gradient all-reduce per optimizer update whatever the number of micro-batches; after the step
every rank holds the same weights. The 2-rank runs of every case share one pair of spawned
processes (starting one costs seconds)."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
from dp_worker import steps_on_fixed_batch

AGGS = ["seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm"]
# 2 prompts x G=4; micro-batches of 2, so each rank accumulates two before its update.
CASES = {agg: [f"algo.loss_agg={agg}", "algo.beta=0", "trainer.micro_batch_size=2"]
         for agg in AGGS}
# Per rank 4 sequences in micro-batches of 1, updates of 2 micro-batches, two passes:
# 2 mini-batches x 2 iterations = 4 updates of 16 micro-batches, with a reference (KL).
CASES["many"] = ["algo.beta=0.04", "trainer.micro_batch_size=1", "trainer.grad_accum_steps=2",
                 "algo.num_iterations=2"]
# The loss variants: GSPO's sequence ratio off-policy (its second pass), and CISPO with the
# entropy bonus and the top-entropy tokens (one threshold over both ranks' tokens).
VARIANTS = {
    "gspo": ["algo=gspo", "algo.num_iterations=2", "trainer.micro_batch_size=2"],
    "cispo_entropy": ["algo=cispo", "algo.top_entropy_quantile=0.3", "algo.entropy_coef=0.01",
                      "trainer.micro_batch_size=2"],
}
CASES.update(VARIANTS)


@pytest.fixture(scope="module")
def two_ranks(tiny_llama_path, tmp_path_factory) -> dict[str, list[dict]]:
    folder = tmp_path_factory.mktemp("dp")
    out = str(folder / "two")
    mp.start_processes(steps_on_fixed_batch, nprocs=2, start_method="spawn",
                       args=(2, str(folder / "init"), str(tiny_llama_path), out,
                             list(CASES.items())))
    return {name: [torch.load(f"{out}.{name}.rank{r}.pt") for r in range(2)] for name in CASES}


def _one_rank(tiny_llama_path, tmp_path, name: str) -> dict:
    out = str(tmp_path / "one")
    steps_on_fixed_batch(0, 1, "", str(tiny_llama_path), out, [(name, CASES[name])])
    return torch.load(f"{out}.{name}.rank0.pt")


def _close(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-7)


def _same_weights(r0: dict, r1: dict) -> None:
    # The ranks applied the same summed gradient, so they hold bit-identical weights.
    for a, b in zip(r0["weights"], r1["weights"], strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("agg", AGGS)
def test_two_ranks_give_the_one_rank_gradient_and_identical_weights(tiny_llama_path, tmp_path,
                                                                   two_ranks, agg):
    one = _one_rank(tiny_llama_path, tmp_path, agg)
    r0, r1 = two_ranks[agg]
    assert len(one["grads"]) == len(r0["grads"]) == 1  # one optimizer update in the step
    _close(one["grads"][0], r0["grads"][0])
    _same_weights(r0, r1)
    _close(one["weights"], r0["weights"])
    assert r0["losses"] == r1["losses"]
    assert r0["losses"][0] == pytest.approx(one["losses"][0], rel=1e-5, abs=1e-7)
    assert r0["grad_norms"][0] == pytest.approx(one["grad_norms"][0], rel=1e-5)
    for key, value in one["loss_means"].items():  # the logged means are the global batch's
        assert r0["loss_means"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    assert r0["entropy"] == pytest.approx(one["entropy"], rel=1e-5)
    # One all-reduce of the whole gradient per optimizer update, none per micro-batch.
    assert r0["all_reduce_sizes"].count(r0["num_params"]) == 1
    assert one["all_reduce_sizes"] == []  # one process: no collective at all


def test_one_gradient_all_reduce_per_update_with_several_updates(two_ranks):
    r0, r1 = two_ranks["many"]
    assert len(r0["grads"]) == 4
    assert r0["all_reduce_sizes"].count(r0["num_params"]) == 4
    _same_weights(r0, r1)
    assert r0["loss_means"] == r1["loss_means"]  # the KL controller's input is the same too
    assert "kl" in r0["loss_means"]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_loss_variants_give_the_one_rank_gradient_on_two_ranks(tiny_llama_path, tmp_path,
                                                                two_ranks, name):
    one = _one_rank(tiny_llama_path, tmp_path, name)
    r0, r1 = two_ranks[name]
    assert len(one["grads"]) == len(r0["grads"])
    for a, b in zip(one["grads"], r0["grads"], strict=True):
        _close(a, b)
    _same_weights(r0, r1)
    _close(one["weights"], r0["weights"])
    assert r0["losses"] == pytest.approx(one["losses"], rel=1e-5, abs=1e-7)
    for key, value in one["loss_means"].items():
        assert r0["loss_means"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key

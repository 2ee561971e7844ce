"""rollout.generate: grouping, EOS masks, truncation, batching, min_new_tokens, concat."""

from __future__ import annotations

import pytest
import torch

from grpo_cli.rollout.engine import (
    Rollout,
    SamplingSettings,
    concat_rollouts,
    eos_token_ids,
    generate,
)

PROMPTS = ["What is 2 + 3?", "Natalia sold clips to 48 of her friends in April",
           "Solve for x: 3x + 4 = 19"]


@pytest.fixture(scope="module")
def tiny(tiny_llama_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path, dtype=torch.float32)
    return model, tok


@pytest.fixture
def with_extra_eos(tiny):
    """Make a token the tiny model emits early for prompt 0 a stop token too."""
    model, tok = tiny
    free = generate(model, tok, PROMPTS[:1],
                    SamplingSettings(num_samples=1, max_new_tokens=8, greedy=True))
    extra = int(free.completion_ids[0, 3])
    old = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [tok.eos_token_id, extra]
    yield extra
    model.generation_config.eos_token_id = old


def test_groups_and_shapes(tiny):
    model, tok = tiny
    ro = generate(model, tok, PROMPTS,
                  SamplingSettings(num_samples=2, max_new_tokens=6, greedy=True))
    assert ro.prompt_ids.shape[0] == ro.completion_ids.shape[0] == 6
    assert ro.completion_ids.shape[1] <= 6 and len(ro.texts) == 6
    for i in range(3):  # rows 2i, 2i+1 are prompt i
        assert torch.equal(ro.prompt_ids[2 * i], ro.prompt_ids[2 * i + 1])
    assert not torch.equal(ro.prompt_ids[0], ro.prompt_ids[2])
    assert torch.equal(ro.input_ids, torch.cat([ro.prompt_ids, ro.completion_ids], 1))


def test_eos_mask_pad_and_truncation(tiny, with_extra_eos):
    model, tok = tiny
    ro = generate(model, tok, PROMPTS,
                  SamplingSettings(num_samples=1, max_new_tokens=10, greedy=True))
    eos = set(eos_token_ids(model, tok))
    for ids, mask, trunc in zip(ro.completion_ids.tolist(), ro.completion_mask.tolist(),
                                ro.truncated.tolist()):
        n = sum(mask)
        assert mask == [1] * n + [0] * (len(mask) - n)
        assert trunc == (not any(t in eos for t in ids[:n]))
        if not trunc:
            assert ids[n - 1] in eos and all(t not in eos for t in ids[: n - 1])
        assert all(t == tok.pad_token_id for t in ids[n:])
    assert ro.truncated.tolist()[0] is False  # prompt 0 stops at the extra EOS (step 4)
    assert int(ro.lengths[0]) == 4


def test_min_new_tokens_holds_eos_back(tiny, with_extra_eos):
    model, tok = tiny
    ro = generate(model, tok, PROMPTS[:1],
                  SamplingSettings(num_samples=2, max_new_tokens=9, min_new_tokens=9,
                                   greedy=True))
    assert ro.lengths.tolist() == [9, 9]


def test_batch_size_splits_without_changing_results(tiny, with_extra_eos):
    model, tok = tiny
    seen = []
    whole = generate(model, tok, PROMPTS,
                     SamplingSettings(num_samples=2, max_new_tokens=8, greedy=True))
    split = generate(model, tok, PROMPTS,
                     SamplingSettings(num_samples=2, max_new_tokens=8, greedy=True),
                     batch_size=2, on_batch=seen.append)
    assert seen == [2, 2, 2]
    L = whole.completion_ids.shape[1]
    assert split.completion_ids.shape[1] == L
    assert torch.equal(split.completion_ids, whole.completion_ids)
    assert torch.equal(split.completion_mask, whole.completion_mask)
    assert split.texts == whole.texts


def test_training_mode_is_restored(tiny):
    model, tok = tiny
    model.train()
    generate(model, tok, PROMPTS[:1], SamplingSettings(num_samples=2, max_new_tokens=3))
    assert model.training
    model.eval()
    generate(model, tok, PROMPTS[:1], SamplingSettings(num_samples=2, max_new_tokens=3))
    assert not model.training


def test_sampling_is_seeded_and_varied(tiny):
    model, tok = tiny
    torch.manual_seed(0)
    a = generate(model, tok, PROMPTS[:1],
                 SamplingSettings(num_samples=4, max_new_tokens=6, temperature=1.5))
    torch.manual_seed(0)
    b = generate(model, tok, PROMPTS[:1],
                 SamplingSettings(num_samples=4, max_new_tokens=6, temperature=1.5))
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert len({tuple(r) for r in a.completion_ids.tolist()}) > 1


def test_concat_rollouts_repads():
    def ro(P, L, fill):
        return Rollout(torch.full((1, P), fill), torch.ones(1, P, dtype=torch.long),
                       torch.full((1, L), fill), torch.ones(1, L, dtype=torch.long),
                       torch.tensor([False]), [str(fill)])

    out = concat_rollouts([ro(2, 3, 5), ro(4, 1, 6)], pad_id=0)
    assert out.prompt_ids.tolist() == [[0, 0, 5, 5], [6, 6, 6, 6]]
    assert out.prompt_mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    assert out.completion_ids.tolist() == [[5, 5, 5], [6, 0, 0]]
    assert out.completion_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out.texts == ["5", "6"]

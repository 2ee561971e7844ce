"""sft.packing: rows packed in one sequence keep their own positions and attend only to
themselves, so each row's per-token loss is its loss alone, and a packed step is the padded
step."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from grpo_cli.sft.data import IGNORE, SftRow, Tokenized, collate, make_batches, tokenize
from grpo_cli.sft.pack import block_causal_mask, collate_packed, pack, packed_inputs
from grpo_cli.sft.run import train_step


def rows(n: int, length: int) -> list[Tokenized]:
    return [Tokenized([length] * length, [length] * length) for _ in range(n)]


def test_rows_fill_the_fewest_sequences_evenly():
    # lengths 5, 4, 3, 3, 2 (17) in sequences of 8: 3 at least; longest first into the least
    # filled: 5 -> [5]; 4 -> [4]; 3 -> [3]; 3 -> [3, 3]; 2 -> [4, 2]: longest 6, not 8.
    items = [*rows(1, 3), *rows(1, 5), *rows(1, 2), *rows(1, 4), *rows(1, 3)]
    lengths = [[len(t.input_ids) for t in seq] for seq in pack(items, 8)]
    assert lengths == [[5], [4, 2], [3, 3]]
    assert [[len(t.input_ids) for t in seq] for seq in pack(items, 9)] == [[5, 3], [4, 3, 2]]
    # 3 rows of 6 in sequences of 10: 2 would do by the total, but no two rows fit together
    assert [[len(t.input_ids) for t in seq] for seq in pack(rows(3, 6), 10)] == [[6], [6], [6]]
    with pytest.raises(ValueError, match="a row of 11 tokens > max_len=10"):
        pack(rows(1, 11), 10)


def test_collate_packed_restarts_positions_and_ignores_each_rows_first_token():
    a, b = Tokenized([1, 2, 3], [IGNORE, 2, 3]), Tokenized([4, 5], [4, 5])
    batch = collate_packed([[a, b], [b]], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5], [4, 5, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]
    assert batch["segment_ids"].tolist() == [[0, 0, 0, 1, 1], [0, 0, -1, -1, -1]]
    # b's first token is not predicted from a's last; padding is never trained
    assert batch["labels"].tolist() == [[IGNORE, 2, 3, IGNORE, 5],
                                        [IGNORE, 5, IGNORE, IGNORE, IGNORE]]


def test_block_causal_mask_by_hand():
    mask = block_causal_mask(torch.tensor([[0, 0, 1, -1]]))  # [1, 1, 4, 4]
    assert mask[0, 0].int().tolist() == [[1, 0, 0, 0],
                                         [1, 1, 0, 0],
                                         [0, 0, 1, 0],   # row 2 starts afresh
                                         [0, 0, 0, 1]]   # padding sees itself only


def per_token_nll(model, batch) -> torch.Tensor:
    """[B, T-1] negative log-likelihood of each next token (0 where the label is -100)."""
    if "segment_ids" in batch:
        logits = model(**packed_inputs(model, batch)).logits  # [B, T, V]
    else:
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits  # [B, T, V]
    targets = batch["labels"][:, 1:]  # [B, T-1]
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # [B, T-1, V]
    nll = -logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0]  # [B, T-1]
    return nll * (targets != IGNORE)


@pytest.fixture(scope="module")
def tok(tiny_llama_path):
    return AutoTokenizer.from_pretrained(tiny_llama_path)


def make_rows(tok) -> list[Tokenized]:
    return [tokenize(tok, SftRow(str(i), [{"role": "user", "content": f"What is {i} * 7?"}],
                                 f"{i} * 7 = {i * 7}. " * (i + 1))) for i in range(4)]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_a_packed_rows_loss_is_its_loss_alone(tiny_llama_path, tok, attn):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path, dtype=torch.float32,
                                                 attn_implementation=attn).eval()
    items = make_rows(tok)
    width = sum(len(t.input_ids) for t in items)
    # all four in one sequence, with a padding tail, next to a sequence holding one row
    batch = collate_packed([items, items[:1]], tok.pad_token_id)
    assert batch["input_ids"].shape == (2, width)
    with torch.no_grad():
        packed = per_token_nll(model, batch)[0]  # [T-1]
        at = 0
        for item in items:
            alone = per_token_nll(model, collate([item], tok.pad_token_id))[0]  # [n-1]
            n = len(item.input_ids)
            # token t+1 is predicted at t: row's tokens 1..n-1 sit at at+1..at+n-1
            assert torch.allclose(packed[at:at + n - 1], alone, atol=1e-5)
            at += n


def test_a_packed_step_is_the_padded_step(tiny_llama_path, tok):
    items = make_rows(tok)
    assert len(make_batches(items, 2, tok.pad_token_id, True, 1024)) == 1  # one sequence
    grads = []
    for pack_len in (None, 64):  # 64 tokens: the rows need two sequences
        model = AutoModelForCausalLM.from_pretrained(tiny_llama_path, dtype=torch.float32)
        params = list(model.parameters())
        opt = torch.optim.SGD(params, lr=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        policy = type("P", (), {"model": model, "tokenizer": tok, "device": torch.device("cpu")})
        metrics = train_step(policy, items, 2, opt, sched, params, 0.0, pack_len)
        grads.append((metrics, [p.grad.clone() for p in params]))
    (padded, grad_a), (packed, grad_b) = grads
    assert padded["tokens"] == packed["tokens"]
    assert padded["sft/loss"] == pytest.approx(packed["sft/loss"], rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grad_a, grad_b))

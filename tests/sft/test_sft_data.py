"""grpo sft's rows, loss mask and step on a tiny model: only completion tokens are trained,
padding never, and micro-batching does not change the step."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from grpo_cli.data import render_prompt
from grpo_cli.errors import UserError
from grpo_cli.sft.data import IGNORE, SftRow, collate, completion_nll, read_rows, tokenize
from grpo_cli.sft.run import train_step


@pytest.fixture(scope="module")
def tok(tiny_llama_path):
    return AutoTokenizer.from_pretrained(tiny_llama_path)


ROW = SftRow("a", [{"role": "user", "content": "Compute 2 + 3."}], "2 + 3 = 5\n#### 5")


def test_labels_are_the_completion_and_eos_only(tok):
    t = tokenize(tok, ROW)
    prompt = tok(render_prompt(tok, ROW.prompt), add_special_tokens=False)["input_ids"]
    completion = tok(ROW.completion, add_special_tokens=False)["input_ids"]
    assert t.input_ids == prompt + completion + [tok.eos_token_id]
    assert t.labels == [IGNORE] * len(prompt) + completion + [tok.eos_token_id]


def test_collate_pads_right_and_never_trains_padding(tok):
    short = tokenize(tok, SftRow("b", [{"role": "user", "content": "1?"}], "1"))
    long = tokenize(tok, ROW)
    batch = collate([short, long], pad_id=tok.pad_token_id)
    n = len(short.input_ids)
    assert batch["input_ids"].shape == (2, len(long.input_ids))
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (len(long.input_ids) - n)
    assert (batch["labels"][0, n:] == IGNORE).all()
    assert (batch["input_ids"][0, n:] == tok.pad_token_id).all()


class FixedLogits(torch.nn.Module):
    """logits[b, t] = table[token at t]: a bigram model, to check the nll by hand."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def forward(self, input_ids, attention_mask):
        return type("Out", (), {"logits": self.table[input_ids]})()


def test_completion_nll_by_hand():
    # vocab 3; every position predicts log-softmax([0, ln 3, 0]) = [-ln 5, ln 3 - ln 5, -ln 5].
    table = torch.tensor([[0.0, 1.0986123, 0.0]]).repeat(3, 1)
    batch = {"input_ids": torch.tensor([[0, 2, 1, 0]]), "attention_mask": torch.ones(1, 4),
             "labels": torch.tensor([[IGNORE, IGNORE, 1, IGNORE]])}  # one target: token 1
    nll, n = completion_nll(FixedLogits(table), batch)
    assert n == 1
    assert float(nll) == pytest.approx(-(1.0986123 - 1.6094379), abs=1e-5)  # ln 5 - ln 3


def test_micro_batches_give_the_same_step(tiny_llama_path, tok):
    rows = [tokenize(tok, SftRow(str(i), [{"role": "user", "content": f"{i} + 1?"}],
                                 f"{i + 1}" * (i + 1))) for i in range(3)]
    grads = []
    for micro in (3, 1):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_llama_path, torch_dtype=torch.float32)
        params = list(model.parameters())
        opt = torch.optim.SGD(params, lr=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        policy = type("P", (), {"model": model, "tokenizer": tok, "device": torch.device("cpu")})
        metrics = train_step(policy, rows, micro, opt, sched, params, max_grad_norm=0.0)
        grads.append((metrics["sft/loss"], [p.grad.clone() for p in params]))
    (loss_a, grad_a), (loss_b, grad_b) = grads
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grad_a, grad_b))


@pytest.mark.parametrize("row,needle", [
    ({"prompt": "hi"}, "rows.jsonl:2: missing field 'completion'"),
    ({"completion": "x"}, "rows.jsonl:2: missing field 'prompt'"),
    ({"prompt": [{"role": "user"}], "completion": "x"}, "rows.jsonl:2: field 'prompt' must be"),
    ({"prompt": "hi", "completion": ""}, "rows.jsonl:2: field 'completion' must be"),
])
def test_bad_rows_name_file_and_line(row, needle, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"prompt": "ok", "completion": "ok"}) + "\n" + json.dumps(row))
    with pytest.raises(UserError, match=needle):
        read_rows(str(path))


def test_a_string_prompt_is_one_user_message(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"id": "q1", "prompt": "2+2?", "completion": "4"}) + "\n")
    assert read_rows(str(path)) == [SftRow("q1", [{"role": "user", "content": "2+2?"}], "4")]

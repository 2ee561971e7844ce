"""Prompt templates, few-shot message structure and chat-template rendering."""

import pytest

from grpo_cli.data import TEMPLATES, build_messages, count_prompt_tokens, render_prompt
from grpo_cli.data.record import Example

SHOT = Example("s", "What is 2 + 3?", "5", "2 + 3 = 5.", {})
MATH_SHOT = Example("m", "Half of 1?", "\\frac{1}{2}", "It is $\\boxed{\\frac{1}{2}}$.", {})


def test_system_prompts_name_their_answer_format() -> None:
    r1 = TEMPLATES["r1"].system_prompt
    assert "<think>" in r1 and "</think>" in r1 and "<answer>" in r1 and "</answer>" in r1
    assert "####" in TEMPLATES["hash"].system_prompt
    assert "\\boxed{}" in TEMPLATES["boxed"].system_prompt


def test_zero_shot_messages_and_overrides() -> None:
    assert build_messages("Q?", "hash") == [
        {"role": "system", "content": TEMPLATES["hash"].system_prompt},
        {"role": "user", "content": "Q?"}]
    assert build_messages("Q?", "r1", system_prompt="Be brief.")[0] == \
        {"role": "system", "content": "Be brief."}
    assert build_messages("Q?", "boxed", system_prompt="") == [{"role": "user", "content": "Q?"}]


@pytest.mark.parametrize("template, expected", [
    ("r1", "<think>\n2 + 3 = 5.\n</think>\n<answer>5</answer>"),
    ("hash", "2 + 3 = 5.\n#### 5"),
    ("boxed", "2 + 3 = 5.\nThe final answer is $\\boxed{5}$."),
])
def test_few_shot_solutions_use_the_template_format(template: str, expected: str) -> None:
    messages = build_messages("Q?", template, shots=[SHOT, SHOT])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant",
                                             "user"]
    assert messages[1]["content"] == "What is 2 + 3?"
    assert messages[2]["content"] == expected
    assert messages[-1] == {"role": "user", "content": "Q?"}


def test_solution_formats_edge_cases() -> None:
    boxed, hash_, r1 = (TEMPLATES[t].format_solution for t in ("boxed", "hash", "r1"))
    assert boxed(MATH_SHOT.solution, MATH_SHOT.answer) == MATH_SHOT.solution  # not boxed twice
    assert boxed(None, "7") == "The final answer is $\\boxed{7}$."
    assert hash_(None, "7") == "#### 7"
    assert r1(None, "7") == "<think>\n\n</think>\n<answer>7</answer>"


def _tiny_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    words = ["<s>", "[UNK]", "<|user|>", "<|assistant|>", "<|system|>", "Be", "brief", ".",
             "Q", "?", "|", "<", ">"]
    model = tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]")
    backend = tokenizers.Tokenizer(model)
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>",
                                               unk_token="[UNK]")
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|> "
                         "{{ m['content'] }} {% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    return tok


def test_render_prompt_applies_the_chat_template() -> None:
    tok = _tiny_tokenizer()
    messages = build_messages("Q ?", "hash", system_prompt="Be brief .")
    text = render_prompt(tok, messages)
    assert text == "<s><|system|> Be brief . <|user|> Q ? <|assistant|>"
    # <s> (a special token, split off) <|system|> Be brief . <|user|> Q ? <|assistant|>
    assert count_prompt_tokens(tok, messages) == 9

"""Rows of chat `messages` for `grpo sft`: a whole conversation, trained on its assistant turns.

A row `{"messages": [{"role": "system" | "user" | "assistant", "content": ...}, ...]}` is
rendered with the tokenizer's chat template, and the loss is on every assistant turn (its
content and the end-of-turn token); system and user turns, the template's role headers and
separators, and padding have label -100.

Where an assistant turn k starts and ends is read from the template itself, by rendering
prefixes of the conversation (tokenised with add_special_tokens=False, as render_prompt's text
is tokenised):

    before_k = ids(template(messages[:k], add_generation_prompt=True))    prompt for turn k
    after_k  = ids(template(messages[:k + 1]))                           turn k rendered
    full     = ids(template(messages))
    labels[len(before_k) : end_k] = full[...]     end_k: after the EOS token that closes the
                                                  turn (the whole span when the turn has none)

This holds only when each prefix renders to a prefix of the next (before_k of after_k, after_k
of full). Templates that rewrite earlier turns (e.g. drop the reasoning of past assistant
turns) break it; such a row is refused with its file:line instead of being trained on a wrong
mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grpo_cli.errors import UserError

ROLES = ("system", "user", "assistant")
IGNORE = -100


@dataclass(frozen=True)
class ChatRow:
    id: str
    messages: list[dict[str, str]]
    where: str  # file:line, for the errors the template can only raise once rendered


def parse_messages(value: Any, where: str) -> list[dict[str, str]]:
    """The `messages` field of a row, checked: roles, string contents, an assistant turn."""
    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: field 'messages' must be a non-empty list of "
                        "{'role': ..., 'content': ...}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise UserError(f"{where}: messages[{i}] must be {{'role': ..., 'content': "
                            "STRING}")
        if m.get("role") not in ROLES:
            raise UserError(f"{where}: messages[{i}] has role {m.get('role')!r}; allowed: "
                            f"{', '.join(ROLES)}")
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in out):
        raise UserError(f"{where}: field 'messages' has no assistant turn (the loss is on the "
                        "assistant turns: nothing to train)")
    return out


def _ids(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool,
         where: str) -> list[int]:
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=generation_prompt)
    except Exception as exc:  # a template's own raise_exception(), or a Jinja error
        raise UserError(f"{where}: the chat template cannot render these messages "
                        f"({str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r})"
                        ) from None
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _turn_end(ids: list[int], start: int, end: int, eos_id: Any) -> int:
    """Just after the last EOS in ids[start:end] (the token that closes the turn), else end."""
    for i in range(end - 1, start - 1, -1):
        if ids[i] == eos_id:
            return i + 1
    return end


def tokenize_chat(tokenizer: Any, row: ChatRow) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one conversation (see the module docstring)."""
    full = _ids(tokenizer, row.messages, False, row.where)
    labels = [IGNORE] * len(full)
    for k, message in enumerate(row.messages):
        if message["role"] != "assistant":
            continue
        before = _ids(tokenizer, row.messages[:k], True, row.where)
        after = _ids(tokenizer, row.messages[:k + 1], False, row.where)
        if after[:len(before)] != before or full[:len(after)] != after:
            raise UserError(
                f"{row.where}: the chat template does not render messages[{k}] (assistant) as "
                "a continuation of the turns before it, so its tokens cannot be told apart; "
                "use a template that keeps earlier turns unchanged (model.chat_template), or "
                "rows of prompt + completion")
        for i in range(len(before), _turn_end(full, len(before), len(after),
                                               tokenizer.eos_token_id)):
            labels[i] = full[i]
    return full, labels

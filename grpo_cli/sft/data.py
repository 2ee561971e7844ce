"""The rows `grpo sft` trains on, as token ids with a loss mask.

A row (JSONL, `data=jsonl data.path=FILE`) holds either
- `prompt` (chat messages, as `grpo sample` writes them, or a string: one user message) and
  `completion` (the assistant's reply). The prompt is rendered with the tokenizer's chat
  template (`render_prompt`, as grpo train and grpo eval render it) and the completion follows
  it, ended by the EOS token:

      input_ids = prompt_ids + completion_ids + [eos]
      labels    = [-100] * len(prompt_ids) + completion_ids + [eos]    (loss on these only)

- or `messages` (a whole conversation): rendered with the chat template, the loss on every
  assistant turn (chat.py).

A batch is right-padded with the pad token; padding has label -100 and attention 0, so it is
never trained (with sft.packing, rows share sequences instead: pack.py). Rows longer than
sft.max_seq_len are dropped and counted; the file is split into train / held-out by
data.test_size (the same hash split as grpo train's) and cut to data.limit rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from grpo_cli.config.schema import GrpoConfig
from grpo_cli.errors import UserError
from grpo_cli.sft.chat import IGNORE, ChatRow, parse_messages, tokenize_chat

log = logging.getLogger("grpo")


@dataclass(frozen=True)
class SftRow:
    id: str
    prompt: list[dict[str, str]]
    completion: str


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[int]
    labels: list[int]  # IGNORE on prompt tokens


def _messages(value: Any, where: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if (isinstance(value, list) and value and all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in value)):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise UserError(f"{where}: field 'prompt' must be a string or a list of chat messages "
                    "({'role': ..., 'content': ...})")


def read_rows(path: str) -> list[SftRow | ChatRow]:
    """Every row of a JSONL file; a row that is neither prompt + completion nor messages names
    its file:line."""
    from grpo_cli.data.adapters import require
    from grpo_cli.data.sources import read_jsonl

    rows: list[SftRow | ChatRow] = []
    for row in read_jsonl(Path(path)):
        row_id = str(row.data.get("id", f"row/{row.index}"))
        if "messages" in row.data:
            if "prompt" in row.data or "completion" in row.data:
                raise UserError(f"{row.where}: a row holds either 'messages' or 'prompt' + "
                                "'completion', not both")
            rows.append(ChatRow(row_id, parse_messages(row.data["messages"], row.where),
                                row.where))
            continue
        if "prompt" not in row.data and "completion" not in row.data:
            raise UserError(f"{row.where}: a row needs 'prompt' + 'completion' or 'messages' "
                            f"(it has: {', '.join(sorted(row.data)) or 'nothing'})")
        prompt, completion = require(row, "prompt"), require(row, "completion")
        if not isinstance(completion, str) or not completion.strip():
            raise UserError(f"{row.where}: field 'completion' must be a non-empty string")
        rows.append(SftRow(row_id, _messages(prompt, row.where), completion))
    return rows


def check_chat_template(tokenizer: Any, rows: Sequence[SftRow | ChatRow], path: str) -> None:
    """Rows of `messages` need the model's own chat template (or model.chat_template), not the
    plain fallback a base model gets."""
    from grpo_cli.policy.tokenizer import FALLBACK_CHAT_TEMPLATE

    if (any(isinstance(r, ChatRow) for r in rows)
            and getattr(tokenizer, "chat_template", None) in (None, "", FALLBACK_CHAT_TEMPLATE)):
        raise UserError(f"{path}: rows of 'messages' are rendered with the model's chat "
                        "template and this model has none; set model.chat_template=JINJA, use "
                        "a chat model, or write rows of 'prompt' + 'completion'")


def tokenize(tokenizer: Any, row: SftRow | ChatRow) -> Tokenized:
    from grpo_cli.data import render_prompt

    if isinstance(row, ChatRow):
        return Tokenized(*tokenize_chat(tokenizer, row))
    prompt_ids = tokenizer(render_prompt(tokenizer, row.prompt),
                           add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(row.completion, add_special_tokens=False)["input_ids"]
    completion_ids = completion_ids + [tokenizer.eos_token_id]
    return Tokenized(prompt_ids + completion_ids, [IGNORE] * len(prompt_ids) + completion_ids)


def collate(items: Sequence[Tokenized], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids / attention_mask / labels, each [B, T]."""
    width = max(len(t.input_ids) for t in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)  # [B, T]
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)  # [B, T]
    mask = torch.zeros((len(items), width), dtype=torch.long)  # [B, T]
    for i, t in enumerate(items):
        n = len(t.input_ids)
        ids[i, :n] = torch.tensor(t.input_ids)
        labels[i, :n] = torch.tensor(t.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def chunks(items: list, n: int) -> list[list]:
    return [items[i:i + n] for i in range(0, len(items), n)]


def make_batches(items: list[Tokenized], micro: int, pad_id: int, packing: bool,
                 max_len: int) -> list[dict[str, torch.Tensor]]:
    """Micro-batches of `micro` rows, right-padded; with packing, of `micro` packed sequences
    of up to max_len tokens each (pack.py)."""
    if not packing:
        return [collate(c, pad_id) for c in chunks(items, micro)]
    from grpo_cli.sft.pack import collate_packed, pack

    return [collate_packed(c, pad_id) for c in chunks(pack(items, max_len), micro)]


def completion_nll(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(sum of the completion tokens' negative log-likelihood, their count) of one batch."""
    if "segment_ids" in batch:  # packed rows
        from grpo_cli.sft.pack import packed_inputs

        logits = model(**packed_inputs(model, batch)).logits  # [B, T, V]
    else:
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits  # [B, T, V]
    targets = batch["labels"][:, 1:]  # [B, T-1]: token t+1 is predicted at t
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
        ignore_index=IGNORE, reduction="sum")
    return nll, int((targets != IGNORE).sum())


def load_sft_data(cfg: GrpoConfig, tokenizer: Any) -> tuple[list[Tokenized], list[Tokenized]]:
    """(train, held-out) tokenized rows of data.path (see the module docstring)."""
    from grpo_cli.data.build import hold_out

    if cfg.data.name != "jsonl" or not cfg.data.path:
        raise UserError("grpo sft reads JSONL rows of prompt + completion or messages: use "
                        f"data=jsonl data.path=FILE (got data.name={cfg.data.name})")
    rows = read_rows(cfg.data.path)
    check_chat_template(tokenizer, rows, cfg.data.path)
    train, test = hold_out(rows, cfg.data.test_size)
    if cfg.data.limit:
        train = train[:cfg.data.limit]
    out = []
    for part in (train, test):
        tokens = [tokenize(tokenizer, r) for r in part]
        kept = [t for t in tokens if len(t.input_ids) <= cfg.sft.max_seq_len]
        if len(kept) < len(tokens):
            log.warning("sft: dropped %d rows longer than sft.max_seq_len=%d",
                        len(tokens) - len(kept), cfg.sft.max_seq_len)
        out.append(kept)
    if not out[0]:
        raise UserError(f"{cfg.data.path}: no training rows remain ({len(rows)} rows, "
                        f"{len(test)} held out, the rest longer than sft.max_seq_len="
                        f"{cfg.sft.max_seq_len})")
    log.info("sft: %d train / %d held-out rows from %s", len(out[0]), len(out[1]),
             cfg.data.path)
    return out[0], out[1]

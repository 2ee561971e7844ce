"""The tokenizer side of the policy: a safe pad token and a chat template.

The pad token must not be a stop token (else masks built from `ids != pad` would drop the EOS
the policy must learn to emit), nor BOS, nor a token of the chat template. A base model
without a chat template gets `model.chat_template`, or the plain `FALLBACK_CHAT_TEMPLATE`.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
from torch import nn

from grpo_cli.errors import UserError

log = logging.getLogger("grpo")

# For base models without a template (and no model.chat_template): plain role prefixes.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n' }}"
    "{% else %}{{ 'Assistant: ' + message['content'] + eos_token + '\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
# Existing special tokens worth reusing as pad, best first; then any "*pad*", then "reserved".
PAD_PREFERENCE = ["<|finetune_right_pad_id|>", "<pad>", "<|pad|>", "[PAD]", "<|endoftext|>",
                  "<unk>"]
NEW_PAD_TOKEN = "<pad>"


def stop_token_ids(tokenizer, model: nn.Module) -> set[int]:
    """Every id that ends a generation: the tokenizer's EOS and the generation config's."""
    ids: set[int] = set()
    gen = getattr(model, "generation_config", None)
    for value in (tokenizer.eos_token_id, getattr(gen, "eos_token_id", None)):
        if value is not None:
            ids.update([value] if isinstance(value, int) else value)
    return ids


def pick_pad_token(tokenizer, stop_ids: set[int]) -> Optional[str]:
    """The current pad token if it is safe, else the best existing special token, else None.

    Safe = in the vocabulary, not a stop token, not BOS, and not part of the chat template
    (so it never stands for real content and masks built from it never hide an EOS).
    """
    vocab = tokenizer.get_vocab()
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""

    def safe(token: Optional[str]) -> bool:
        return (token is not None and token in vocab and vocab[token] not in stop_ids
                and token != tokenizer.bos_token and token not in template)

    if safe(tokenizer.pad_token):
        return tokenizer.pad_token
    special = sorted(t.content for t in tokenizer.added_tokens_decoder.values() if t.special)
    candidates = (PAD_PREFERENCE + [t for t in special if "pad" in t.lower()]
                  + [t for t in special if "reserved" in t.lower()])
    return next((t for t in candidates if safe(t)), None)


def ensure_pad_token(tokenizer, model: nn.Module, stop_ids: set[int]) -> str:
    """Give the tokenizer (and model configs) a safe pad token; add `<pad>` if none exists.

    A new `<pad>` row in the embeddings (and an untied lm-head) is set to the mean of the
    existing rows: deterministic, so an adapter checkpoint needs not store the embeddings.
    """
    if tokenizer.pad_token is None and tokenizer.eos_token is None:
        raise UserError(f"the tokenizer of {tokenizer.name_or_path!r} has no pad and no EOS "
                        "token: generation could never stop; use a model with an EOS token")
    chosen = pick_pad_token(tokenizer, stop_ids)
    if chosen is None:
        tokenizer.add_special_tokens({"pad_token": NEW_PAD_TOKEN})
        _grow_embeddings(model, len(tokenizer))
        log.info("pad token: added %s (id %d) and resized the embeddings",
                 NEW_PAD_TOKEN, tokenizer.pad_token_id)
    elif chosen != tokenizer.pad_token:
        log.info("pad token: %s (was %s)", chosen, tokenizer.pad_token)
        tokenizer.pad_token = chosen
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return tokenizer.pad_token


@torch.no_grad()
def _grow_embeddings(model: nn.Module, size: int) -> None:
    old = model.get_input_embeddings().weight.shape[0]
    if size <= old:
        return
    model.resize_token_embeddings(size, mean_resizing=False)
    for emb in (model.get_input_embeddings(), model.get_output_embeddings()):
        if emb is not None and emb.weight.shape[0] == size:
            emb.weight[old:] = emb.weight[:old].mean(dim=0, keepdim=True)  # [new, H]


def ensure_chat_template(tokenizer, template: Optional[str]) -> None:
    """Keep the model's chat template; else use model.chat_template or the plain fallback."""
    if tokenizer.chat_template:
        return
    tokenizer.chat_template = template or FALLBACK_CHAT_TEMPLATE
    log.info("chat template: the model has none; using %s",
             "model.chat_template" if template else "the plain built-in one")

"""Tokenizer preparation: a safe pad token, left padding, a chat template for base models."""

from __future__ import annotations

import pytest
import torch
from tiny import make_tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from grpo_cli.config.schema import ModelConfig
from grpo_cli.errors import UserError
from grpo_cli.policy.model import (
    FALLBACK_CHAT_TEMPLATE,
    build_policy,
    ensure_pad_token,
    stop_token_ids,
)


@pytest.fixture(scope="module")
def no_pad_path(tmp_path_factory):
    """A tiny base model: no pad token, no `<pad>` in the vocabulary, no chat template."""
    return make_tiny_model(tmp_path_factory.mktemp("no_pad"), arch="qwen2", with_pad=False,
                           with_chat_template=False)


def load(path):
    return AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)


def test_existing_pad_is_kept_and_padding_is_left(tiny_llama_path):
    policy = build_policy(ModelConfig(name_or_path=str(tiny_llama_path)), need_reference=False)
    tok = policy.tokenizer
    assert tok.pad_token == "<pad>" and tok.padding_side == "left"
    assert policy.model.config.pad_token_id == tok.pad_token_id
    batch = tok(["a", "a longer text"], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, 0] == tok.pad_token_id and batch["attention_mask"][0, 0] == 0


def test_missing_pad_reuses_a_non_eos_special_token(no_pad_path):
    policy = build_policy(ModelConfig(name_or_path=str(no_pad_path)), need_reference=False)
    tok = policy.tokenizer
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token != tok.eos_token
    assert len(tok) == policy.model.get_input_embeddings().weight.shape[0] == 400  # no resize
    assert policy.model.generation_config.pad_token_id == tok.pad_token_id


def test_pad_equal_to_eos_is_replaced(tiny_llama_path):
    tok, model = load(tiny_llama_path)
    tok.pad_token = "<|im_end|>"  # what many chat models ship (SmolLM2 does)
    assert ensure_pad_token(tok, model, stop_token_ids(tok, model)) == "<pad>"


def test_new_pad_token_is_added_with_a_mean_embedding(no_pad_path):
    tok, model = load(no_pad_path)
    tok.chat_template = "{{ '<|im_start|>' + messages[0]['content'] + '<|im_end|>' }}"
    tok.eos_token = "<|endoftext|>"  # both remaining special tokens now stop or template
    old = model.get_input_embeddings().weight.detach().clone()  # [400, H]
    assert ensure_pad_token(tok, model, stop_token_ids(tok, model)) == "<pad>"
    new = model.get_input_embeddings().weight  # [401, H]
    assert tok.pad_token_id == 400 and new.shape[0] == 401 == len(tok)
    torch.testing.assert_close(new[400], old.mean(0))
    torch.testing.assert_close(model.get_output_embeddings().weight[400], old.mean(0))  # tied


def test_no_pad_and_no_eos_is_a_user_error(no_pad_path):
    tok, model = load(no_pad_path)
    tok.eos_token = None
    with pytest.raises(UserError, match="no pad and no EOS"):
        ensure_pad_token(tok, model, stop_token_ids(tok, model))


def test_model_chat_template_is_kept(tiny_llama_path):
    policy = build_policy(ModelConfig(name_or_path=str(tiny_llama_path)), need_reference=False)
    text = policy.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}],
                                                add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_missing_chat_template_falls_back(no_pad_path):
    policy = build_policy(ModelConfig(name_or_path=str(no_pad_path)), need_reference=False)
    tok = policy.tokenizer
    assert tok.chat_template == FALLBACK_CHAT_TEMPLATE
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+3?"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "Be brief.\n\nUser: 2+3?\nAssistant:"
    custom = "{% for m in messages %}Q: {{ m['content'] }}\n{% endfor %}A:"
    policy = build_policy(ModelConfig(name_or_path=str(no_pad_path), chat_template=custom),
                          need_reference=False)
    assert policy.tokenizer.apply_chat_template(messages[1:], tokenize=False) == "Q: 2+3?\nA:"

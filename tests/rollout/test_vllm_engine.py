"""The vllm rollout engine against the hf one (rollout contract) and through `grpo train` /
`grpo eval`. Needs vLLM: run in the vLLM venv (README, "Rollout engines"):

    VLLM_ENABLE_V1_MULTIPROCESSING=0 OMP_NUM_THREADS=1 VENV/bin/python -m pytest -m vllm

vLLM's CPU attention needs head_dim >= 32, so the tiny model here has 2 heads (head_dim 32).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from grpo_cli.config.vllm_rules import vllm_installed

pytestmark = [pytest.mark.vllm,
              pytest.mark.skipif(not vllm_installed(), reason="vLLM is not installed here "
                                 "(scripts/install_vllm_cpu.sh builds a venv with it)")]
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

SMOLLM2 = Path(os.path.expanduser("~/.cache/grpo/models/SmolLM2-135M-Instruct"))
QUESTIONS = ["What is 2 + 3?", "Natalia sold 48 clips in April. How many in May?"]


def _prompts(tok, questions=QUESTIONS):
    return [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                    add_generation_prompt=True) for q in questions]


def _engines(path, r=8):
    from lora_policy import lora_policy

    from grpo_cli.rollout.engine import HfEngine
    from grpo_cli.rollout.vllm import VllmEngine, VllmOptions

    policy = lora_policy(path, r=r)
    opts = VllmOptions(model_path=str(path), max_lora_rank=max(8, r), cpu_kv_cache_gib=0.25,
                       max_model_len=1024)
    return policy, HfEngine(policy, "off"), VllmEngine(policy, opts, seed=0)


@pytest.fixture(scope="module")
def tiny_engines(tiny_head32_path):
    policy, hf, vl = _engines(tiny_head32_path)
    yield policy, hf, vl
    vl.close()


def _optimizer_step(policy):
    """One real optimizer step on the LoRA weights (a loss that moves the logits)."""
    params = [p for n, p in policy.model.named_parameters() if "lora_" in n]
    opt = torch.optim.SGD(params, lr=0.5)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    policy.model(input_ids=ids).logits.square().mean().backward()
    opt.step()
    opt.zero_grad()


def _assert_same_rollout(a, b):
    assert torch.equal(a.prompt_ids, b.prompt_ids) and torch.equal(a.prompt_mask, b.prompt_mask)
    assert torch.equal(a.completion_ids, b.completion_ids), (a.texts, b.texts)
    assert torch.equal(a.completion_mask, b.completion_mask)
    assert torch.equal(a.truncated, b.truncated) and a.texts == b.texts


def test_greedy_equals_hf_on_tiny_before_and_after_an_optimizer_step(tiny_engines):
    from grpo_cli.rollout.settings import SamplingSettings

    policy, hf, vl = tiny_engines
    greedy = SamplingSettings(num_samples=1, max_new_tokens=24, greedy=True)
    prompts = _prompts(policy.tokenizer)
    before = vl.generate(prompts, greedy)
    _assert_same_rollout(hf.generate(prompts, greedy), before)
    first_id = vl.lora_request().lora_int_id
    _optimizer_step(policy)
    after = vl.generate(prompts, greedy)
    assert vl.lora_request().lora_int_id == first_id + 1  # the new adapter was handed over
    assert vl.llm.llm_engine.list_loras() == {first_id + 1}  # the old one was removed
    _assert_same_rollout(hf.generate(prompts, greedy), after)
    assert not torch.equal(before.completion_ids, after.completion_ids)


def test_sampled_logprobs_equal_the_trainers(tiny_engines):
    from grpo_cli.algo.logprobs import completion_logprobs
    from grpo_cli.rollout.settings import SamplingSettings

    policy, _, vl = tiny_engines
    sampling = SamplingSettings(num_samples=4, max_new_tokens=16, temperature=0.7)
    ro = vl.generate(_prompts(policy.tokenizer), sampling, seed=3)
    assert ro.sampler_logp.dtype == torch.float32
    assert ro.sampler_logp.shape == ro.completion_ids.shape
    mask = torch.cat([ro.prompt_mask, ro.completion_mask], dim=1)
    with torch.no_grad():
        logp, _ = completion_logprobs(policy.model, ro.input_ids, mask, ro.completion_ids.shape[1],
                                      0.7, micro_batch_size=8)
    gap = ((logp - ro.sampler_logp).abs() * ro.completion_mask).max().item()
    assert gap < 1e-4, gap
    again = vl.generate(_prompts(policy.tokenizer), sampling, seed=3)
    assert torch.equal(again.completion_ids, ro.completion_ids)  # seeded: repeatable


def test_first_token_frequencies_follow_the_models_distribution(tiny_engines):
    """Chi-square of vLLM's first sampled tokens against softmax(logits / T) of the policy
    (the distribution the hf engine samples; p-value threshold 1e-3)."""
    from grpo_cli.rollout.settings import SamplingSettings

    policy, _, vl = tiny_engines
    prompt = _prompts(policy.tokenizer, QUESTIONS[:1])
    T, per, repeats = 0.8, 100, 10  # 10 requests of n=100 (vLLM's CPU batch stays small)
    ro = vl.generate(prompt * repeats, SamplingSettings(num_samples=per, max_new_tokens=1,
                                                        temperature=T), seed=11)
    draws = per * repeats
    counts = torch.bincount(ro.completion_ids[:, 0], minlength=len(policy.tokenizer)).double()
    ids = policy.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        probs = (policy.model(input_ids=ids).logits[0, -1].double() / T).softmax(-1)
    probs = probs[: counts.numel()]
    expected = probs * draws
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum().unsqueeze(0)])
    exp = torch.cat([expected[big], expected[~big].sum().unsqueeze(0)])
    chi2 = (((obs - exp) ** 2) / exp.clamp_min(1e-12)).sum().item()
    dof = int(big.sum()) if exp[-1] > 0 else int(big.sum()) - 1
    # Wilson-Hilferty: the chi-square quantile of p = 1e-3 (z = 3.09)
    crit = dof * (1 - 2 / (9 * dof) + 3.09 * math.sqrt(2 / (9 * dof))) ** 3
    assert chi2 < crit, (chi2, crit, dof)


def test_batch_size_chunks_the_requests_and_samples_the_same(tiny_engines, monkeypatch):
    """rollout.batch_size caps the sequences of one llm.generate call (whole groups), and
    on_batch follows the chunks; the seeds follow each prompt's place in the whole list, so
    the chunked rollout is the one-call rollout."""
    from grpo_cli.rollout.settings import SamplingSettings

    policy, _, vl = tiny_engines
    prompts = _prompts(policy.tokenizer, [*QUESTIONS, "Solve for x: 3x + 4 = 19."])
    sampling = SamplingSettings(num_samples=2, max_new_tokens=12, temperature=0.9)
    whole = vl.generate(prompts, sampling, seed=5)
    calls, done, real = [], [], vl.llm.generate

    def counted(requests, params, **kwargs):
        calls.append(sum(p.n for p in params))
        return real(requests, params, **kwargs)

    monkeypatch.setattr(vl.llm, "generate", counted)
    chunked = vl.generate(prompts, sampling, batch_size=5, seed=5, on_batch=done.append)
    assert calls == [4, 2] and done == [4, 2]  # 5 sequences -> 2 groups of 2, then 1
    _assert_same_rollout(whole, chunked)
    assert torch.allclose(whole.sampler_logp, chunked.sampler_logp, atol=1e-5)
    assert not torch.equal(chunked.completion_ids[0], chunked.completion_ids[1])  # sampled


@pytest.mark.skipif(not SMOLLM2.is_dir(), reason=f"{SMOLLM2} is not here")
def test_greedy_equals_hf_on_smollm2_with_lora_before_and_after_a_step():
    from grpo_cli.rollout.settings import SamplingSettings

    policy, hf, vl = _engines(SMOLLM2, r=8)
    try:
        greedy = SamplingSettings(num_samples=1, max_new_tokens=24, greedy=True)
        prompts = _prompts(policy.tokenizer)
        _assert_same_rollout(hf.generate(prompts, greedy), vl.generate(prompts, greedy))
        _optimizer_step(policy)
        _assert_same_rollout(hf.generate(prompts, greedy), vl.generate(prompts, greedy))
    finally:
        vl.close()


def test_grpo_train_with_vllm_runs_checkpoints_and_resumes(tiny_head32_path, tmp_path,
                                                           capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "cli"))  # toy_rewards
    import in_process
    import tiny_run

    out = tmp_path / "run"
    args = tiny_run.base_args(tiny_head32_path, out, 2, "rollout.engine=vllm",
                              "model.lora.r=8", "rollout.vllm.cpu_kv_cache_gib=0.25",
                              "rollout.vllm.max_model_len=512", "trainer.save_every=1")
    first = in_process.grpo(capsys, "train", *args)
    assert first.returncode == 0, first.stderr[-2000:]
    rows = tiny_run.metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(v) for r in rows for v in r.values() if isinstance(v, float))
    assert "sampler/logp_gap" in rows[-1]
    from safetensors.torch import load_file

    adapter = load_file(str(out / "checkpoints" / "final" / "policy" / "adapter_model.safetensors"))
    # LoRA B starts at 0: a trained adapter has moved it
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    more = tiny_run.base_args(tiny_head32_path, out, 3, "rollout.engine=vllm",
                              "model.lora.r=8", "rollout.vllm.cpu_kv_cache_gib=0.25",
                              "rollout.vllm.max_model_len=512", "trainer.resume=auto")
    again = in_process.grpo(capsys, "train", *more)
    assert again.returncode == 0, again.stderr[-2000:]
    assert [r["step"] for r in tiny_run.metrics(out)][-1] == 3

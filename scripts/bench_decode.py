"""Decode speed alone: transformers-style sampling vs grpo's rollout settings, same process.

    python scripts/bench_decode.py              # SmolLM2-135M + LoRA r=16, 2 x 8 x 64 tokens

Runs `rollout.sample_tokens` (prefill once per prompt, KV cache copied G times) on the CPU
benchmark's workload with one torch thread, alternating two settings for `--rounds` rounds:

    before  LoRA layers as peft runs them, tokens drawn with torch.multinomial
    after   LoRA merged into dense weights for the rollout (merge.py), inverse-CDF draw

and prints the median seconds of each and their ratio. Wall-clock only: run it on a quiet
machine, and read the ratio rather than the seconds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from bench_step import demo_model, render_prompts  # this folder; puts the repo on sys.path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", type=Path, default=None, help="default: SmolLM2-135M-Instruct")
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpo_cli.policy.fused_lora import fuse_lora_layers
    from grpo_cli.policy.merge import merged_for_decoding
    from grpo_cli.policy.model import ensure_chat_template
    from grpo_cli.rollout.hf import draw_inverse_cdf, draw_multinomial, sample_tokens
    from grpo_cli.rollout.settings import SamplingSettings

    path = args.model or demo_model()
    tok = AutoTokenizer.from_pretrained(path)
    ensure_chat_template(tok, None)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                             target_modules="all-linear"))
    fuse_lora_layers(model)
    model.eval()
    prompts = [row["prompt"] for row in render_prompts(tok, 2)]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    eos = [tok.eos_token_id]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    sampling = SamplingSettings(num_samples=8, max_new_tokens=args.tokens,
                                min_new_tokens=args.tokens)

    def decode(draw, merge: str) -> float:
        t0 = time.perf_counter()
        with torch.no_grad(), merged_for_decoding(model, merge) as merged:
            sample_tokens(model, enc["input_ids"], enc["attention_mask"], sampling, eos_ids=eos,
                          pad_id=pad, draw=draw, with_logprobs=merged)
        return time.perf_counter() - t0

    settings = {"before": (draw_multinomial, "off"), "after": (draw_inverse_cdf, "on")}
    decode(draw_inverse_cdf, "on")  # warm-up
    times: dict[str, list[float]] = {k: [] for k in settings}
    for rnd in range(args.rounds):
        for name in (list(settings) if rnd % 2 == 0 else list(settings)[::-1]):
            times[name].append(decode(*settings[name]))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name, ts in times.items():
        runs = ", ".join(f"{t:.2f}" for t in ts)
        print(f"{name:7s} median {med[name]:6.2f} s  ({runs})")
    print(f"after / before: {med['after'] / med['before']:.2f}")


if __name__ == "__main__":
    main()

"""The TRL side of scripts/bench_step.py: one GRPOTrainer run, timed, written as JSON.

Run by bench_step.py in its own process (never imported by the grpo package):

    python scripts/bench_trl.py SPEC.json OUT.json

SPEC holds the workload (the same values the `grpo train` run gets). OUT receives one record
per optimizer step: ``step_s`` (TrainerCallback on_step_begin -> on_step_end: generation,
scoring, reference log-probs, loss forward/backward, clipping and the optimizer step),
``generate_s`` (time inside GRPOTrainer._generate_single_turn, i.e. transformers
``generate``), ``reward_s`` (inside ``_calculate_rewards``), ``logprob_s`` (inside
``_get_per_token_logps_and_entropies`` when called without grad: the reference pass) and
``train_s`` = the rest of the step (forward + backward of the loss, optimizer). TRL only
reports its own profiling to W&B/trackio, so these timers wrap its methods instead.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build_trainer(spec: dict, timers: defaultdict):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import GRPOConfig, GRPOTrainer

    from grpo_cli.rewards.builtin import correctness, format_reward

    def timed(key: str, call, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            timers[key] += time.perf_counter() - t0

    class TimedGRPOTrainer(GRPOTrainer):
        """GRPOTrainer with wall-clock timers around generation, rewards and ref log-probs."""

        def _generate_single_turn(self, *args, **kwargs):
            return timed("generate_s", super()._generate_single_turn, *args, **kwargs)

        def _calculate_rewards(self, *args, **kwargs):
            return timed("reward_s", super()._calculate_rewards, *args, **kwargs)

        def _get_per_token_logps_and_entropies(self, *args, **kwargs):
            call = super()._get_per_token_logps_and_entropies
            if torch.is_grad_enabled():  # the loss pass: part of train_s
                return call(*args, **kwargs)
            return timed("logprob_s", call, *args, **kwargs)

    def correctness_reward(prompts, completions, answer, **_):
        return correctness(prompts, completions, answer, mode="flexible", answer_format="hash")

    def format_reward_fn(prompts, completions, answer, **_):
        return format_reward(prompts, completions, answer, answer_format="hash")

    tok = AutoTokenizer.from_pretrained(spec["model"])
    tok.padding_side = "left"
    if spec["pad_token"] is not None:
        tok.pad_token = spec["pad_token"]  # the same pad token grpo picks for this model
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[spec["dtype"]]
    quant = None
    if spec["quantization"] == "nf4":
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                   bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
    device = "cuda" if spec["gpu"] else "cpu"
    model = AutoModelForCausalLM.from_pretrained(
        spec["model"], dtype=dtype, quantization_config=quant, device_map={"": device},
        attn_implementation="sdpa")
    rows = [json.loads(line) for line in Path(spec["prompts"]).read_text().splitlines()]
    dataset = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in rows])
    G, P = spec["num_generations"], spec["prompts_per_step"]
    mbs = spec["micro_batch_size"]
    accum = P * G // mbs
    args = GRPOConfig(
        output_dir=spec["output_dir"], max_steps=spec["steps"], report_to="none",
        save_strategy="no", logging_steps=1, seed=0, shuffle_dataset=False,
        use_cpu=not spec["gpu"], bf16=spec["dtype"] == "bf16", fp16=False,
        per_device_train_batch_size=mbs, gradient_accumulation_steps=accum,
        steps_per_generation=accum, num_generations=G, num_iterations=1,
        max_completion_length=spec["max_new_tokens"],
        generation_kwargs={"min_new_tokens": spec["max_new_tokens"]},
        temperature=1.0, top_p=1.0, top_k=0, beta=spec["beta"], loss_type="grpo",
        scale_rewards="group", epsilon=0.2, learning_rate=1e-5, max_grad_norm=1.0,
        weight_decay=0.0, warmup_steps=0, lr_scheduler_type="constant",
        gradient_checkpointing=spec["gradient_checkpointing"],
        gradient_checkpointing_kwargs={"use_reentrant": False},
        pad_to_multiple_of=None, reward_weights=[1.0, 0.1], log_completions=False,
        dataloader_num_workers=0, disable_tqdm=True,
    )
    peft_cfg = LoraConfig(r=spec["lora_r"], lora_alpha=spec["lora_alpha"], lora_dropout=0.0,
                          target_modules="all-linear", task_type="CAUSAL_LM", bias="none")
    return TimedGRPOTrainer(model=model, reward_funcs=[correctness_reward, format_reward_fn],
                            args=args, train_dataset=dataset, processing_class=tok,
                            peft_config=peft_cfg)


def main(spec_path: str, out_path: str) -> None:
    from transformers import TrainerCallback

    spec = json.loads(Path(spec_path).read_text())
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    timers: defaultdict = defaultdict(float)
    steps: list[dict] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            timers.clear()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            timers["_t0"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            step_s = time.perf_counter() - timers["_t0"]
            rec = {k: timers[k] for k in ("generate_s", "reward_s", "logprob_s")}
            rec["step_s"] = step_s
            rec["train_s"] = step_s - sum(rec[k] for k in ("generate_s", "reward_s",
                                                          "logprob_s"))
            rec["gen_tokens"] = spec["prompts_per_step"] * spec["num_generations"] * spec[
                "max_new_tokens"]
            if torch.cuda.is_available():
                rec["cuda_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
            steps.append(rec)

    trainer = build_trainer(spec, timers)
    trainer.add_callback(StepTimer())
    trainer.train()
    Path(out_path).write_text(json.dumps({"steps": steps}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

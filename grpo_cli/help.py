"""`grpo COMMAND --help`: each command's own usage and keys, read from the schema.

The key lists come from the dataclasses in config/schema.py, with the comment above each field as
its description, so the help can never drift from the schema.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import MISSING, fields, is_dataclass
from typing import Any

from grpo_cli.config import schema


def field_comments(cls: type) -> dict[str, str]:
    """{field name: the comment lines just above it in the class source, joined}."""
    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines()[1:]:
        text = line.strip()
        if text.startswith("#"):
            pending.append(text.lstrip("# ").strip())
            continue
        m = re.match(r"(\w+)\s*:", text)
        if m:
            comments[m.group(1)] = " ".join(pending)
        pending = []
    return comments


def _default(f: Any) -> str:
    if f.default is not MISSING:
        value = f.default
    elif f.default_factory is not MISSING:
        value = f.default_factory()
    else:
        return "???"
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def key_lines(cls: type, prefix: str, only: tuple[str, ...] | None = None) -> list[str]:
    """'  prefix.key=DEFAULT   comment' for each plain field of cls (nested groups skipped)."""
    comments = field_comments(cls)
    lines = []
    for f in fields(cls):
        if (only and f.name not in only) or is_dataclass(f.default_factory):
            continue
        key = f"{prefix}{f.name}={_default(f)}"
        lines.append(f"  {key:32s} {comments.get(f.name, '')}".rstrip())
    return lines


def _groups_and_recipes(command: str) -> list[str]:
    from grpo_cli.config.compose import GROUPS, group_options, recipe_dir

    lines = ["config groups (choose with GROUP=OPTION):"]
    for group in GROUPS:
        lines.append(f"  {group:8s} {', '.join(group_options(group))}")
    if command == "train":
        recipes = ", ".join(p.stem for p in sorted(recipe_dir().glob("*.yaml")))
        lines.append(f"  +recipe  {recipes}")
    return lines


def train_help() -> str:
    return "\n".join([
        "usage: grpo train [+recipe=NAME] [GROUP=OPTION ...] [key=value ...] [--cfg job]", "",
        *_groups_and_recipes("train"), "", "run keys (trainer.*):",
        *key_lines(schema.TrainerConfig, "trainer."), "",
        "any key can be set: algo.beta=0.0 model.lora.r=32 rollout.max_new_tokens=64",
        "see every key and its current value: grpo train --cfg job"])


def eval_help() -> str:
    return "\n".join([
        "usage: grpo eval [checkpoint=PATH | PATH] [GROUP=OPTION ...] [key=value ...] [--cfg job]",
        "       grpo eval data=NAME eval.completions=FILE       grade a file of completions",
        "       grpo eval \"compare='DIR_A,DIR_B'\"                reports side by side", "",
        "what to evaluate:",
        *key_lines(schema.GrpoConfig, "", only=("checkpoint", "compare")), "",
        "eval keys (eval.*):", *key_lines(schema.EvalConfig, "eval."), "",
        "with checkpoint=, the model, data and rewards come from the checkpoint's config.yaml;",
        "a GROUP=OPTION or key=value given here replaces them. Without it:",
        *_groups_and_recipes("eval"), "",
        "see every key and its current value: grpo eval --cfg job"])


def sample_help() -> str:
    return "\n".join([
        "usage: grpo sample [checkpoint=PATH] [GROUP=OPTION ...] sample.out=FILE [key=value ...]",
        "                   [--cfg job]", "",
        "Samples sample.num_samples completions per problem of the data's sample.split, scores",
        "them with the reward stack, keeps them by sample.keep and appends the kept rows to",
        "sample.out (prompt, completion, question, answer, rewards, source checkpoint): the",
        "rows grpo sft and data=jsonl read. A rerun with the same settings resumes it.", "",
        "what to sample from:",
        *key_lines(schema.GrpoConfig, "", only=("checkpoint",)),
        "  (a teacher other than the trained model: model.name_or_path=... instead)", "",
        "sample keys (sample.*):", *key_lines(schema.SampleConfig, "sample."), "",
        "generation (as grpo eval samples):",
        *key_lines(schema.EvalConfig, "eval.", only=("max_new_tokens", "temperature", "top_p",
                                                     "top_k", "batch_size")), "",
        "with checkpoint=, the model, data and rewards come from the checkpoint's config.yaml;",
        "a GROUP=OPTION or key=value given here replaces them. Without it:",
        *_groups_and_recipes("sample"), "",
        "see every key and its current value: grpo sample --cfg job"])


def sft_help() -> str:
    return "\n".join([
        "usage: grpo sft data=jsonl data.path=FILE [GROUP=OPTION ...] [key=value ...] [--cfg job]",
        "",
        "Supervised fine-tuning on JSONL rows of prompt (chat messages or a string) +",
        "completion, e.g. grpo sample's kept rows; the loss is on the completion tokens only.",
        "A row may hold chat `messages` instead: the loss is then on every assistant turn.",
        "The model, optimizer, run folder, checkpoints and resume are grpo train's; its",
        "checkpoint continues with grpo train model.adapter_path=CKPT/policy.", "",
        "sft keys (sft.*):", *key_lines(schema.SftConfig, "sft."), "",
        "run keys (trainer.*):",
        *key_lines(schema.TrainerConfig, "trainer.", only=(
            "run_name", "output_dir", "seed", "max_steps", "micro_batch_size", "save_every",
            "keep_last", "resume", "cpu_threads")), "",
        *_groups_and_recipes("sft"), "",
        "see every key and its current value: grpo sft --cfg job"])


def plan_help() -> str:
    from grpo_cli.plan import GPUS_GIB

    return "\n".join([
        "usage: grpo plan [+recipe=NAME] [GROUP=OPTION ...] [key=value ...] [gpu=NAME] "
        "[ranks=N]", "",
        "Estimates the GPU memory of a training config from the model's config alone (no",
        "weights loaded), says whether it fits the GPU and whether merged decoding",
        "(rollout.merge_adapters=auto) will be on there. With rollout.engine=vllm it adds",
        "vLLM's share and gives the peak during rollout and during training. It reads the",
        "config grpo train would run, so the groups, recipes and keys are train's:", "",
        *_groups_and_recipes("train"), "",
        "plan's own key:",
        "  gpu=NAME   " + ", ".join(GPUS_GIB) + " (default: the GPU of this machine)",
        "  ranks=N    data-parallel processes under torchrun: the memory per GPU, each rank",
        "             holding the model and prompts_per_step / N of the prompts (default 1)",
        "",
        "see every key and its current value: grpo train --cfg job"])


def export_help() -> str:
    return "\n".join([
        "usage: grpo export checkpoint=PATH [out=DIR] [dtype=fp32|bf16|fp16]", "",
        "Merges a LoRA checkpoint into its base model; plain transformers loads the result.",
        "  checkpoint=PATH   a run checkpoint (outputs/RUN/checkpoints/NAME) or its policy/",
        "  out=DIR           default: outputs/RUN/merged/NAME",
        "  dtype=fp32        the weights' dtype: fp32 (default) is the exact merge; bf16 or",
        "                    fp16 halve the size and round every weight once"])

"""What a run reports beyond the step's math, kept honest: a warning for a setting that can
do nothing, and samples files a reader can use. (The logged metrics are named in
metrics.py.)

    reward_template_problems(cfg)        a reward that can never fire under data.template
    sample_rows(parts, batch, adv)       the rows of samples/step-N.jsonl
"""

from __future__ import annotations

import math
from typing import Any

import torch

from grpo_cli.config.schema import GrpoConfig

# Built-in rewards that score one prompt template's layout only (None under the others).
TEMPLATE_ONLY_REWARDS = {"tag_count": ("r1", "the <think>/<answer> tags")}
TEMPLATE_FORMS = {"r1": "<think>..</think><answer>..</answer>", "hash": "'#### N'",
                  "boxed": "\\boxed{}"}

def reward_template_problems(cfg: GrpoConfig) -> list[str]:
    """One warning per reward component that the prompt template makes always inapplicable
    (e.g. `data=gsm8k reward=r1`: the hash template never asks for the tags tag_count
    scores)."""
    problems = []
    for name, comp in cfg.reward.components.items():
        need = TEMPLATE_ONLY_REWARDS.get(comp.fn)
        if need is None or cfg.data.template == need[0]:
            continue
        problems.append(
            f"reward.components.{name} ({comp.fn}) scores {need[1]}, but data.template="
            f"{cfg.data.template} asks for {TEMPLATE_FORMS[cfg.data.template]}: it can never "
            f"fire; set data.template={need[0]} or drop it with ~reward.components.{name}")
    return problems


def sample_rows(parts: Any, batch: Any, adv: torch.Tensor) -> list[dict[str, Any]]:
    """One row per completion: its group (prompt index in the step), the prompt and gold
    answer, the completion, its rewards and advantage. write_samples keeps the prompt on the
    first row of each group only."""
    G = parts.cfg.algo.num_generations
    rows = []
    for i, text in enumerate(batch.rollout.texts):
        index = batch.indices[i // G]
        row = {"group": i // G, "prompt": parts.prompts[index],
               "gold": parts.records[index].answer, "completion": text,
               "reward": float(batch.total[i]), "advantage": float(adv[i])}
        for name, values in batch.components.items():
            v = float(values[i])
            row[f"rewards/{name}"] = None if math.isnan(v) else v
        rows.append(row)
    return rows

"""A run's parts without its loop, for tests that call step.update directly: a tiny LoRA
policy, its optimizer, and scored batches of fixed prompts."""

from __future__ import annotations

import torch
from lora_policy import perturb_lora_b

from grpo_cli.algo.loss import FixedKLController
from grpo_cli.config.compose import compose_config
from grpo_cli.policy.model import build_policy
from grpo_cli.rollout.engine import HfEngine, SamplingSettings, generate
from grpo_cli.trainer.metrics import update_metrics
from grpo_cli.trainer.optim import build_optimizer
from grpo_cli.trainer.parts import RunParts, RunState
from grpo_cli.trainer.step import ScoredBatch, update

G = 4
PROMPTS = ["What is 2 + 3?", "Name a colour."]


class _Tracker:
    def warn(self, message: str) -> None:
        raise AssertionError(f"unexpected warning: {message}")


class Run:
    """The parts and state of a run without a loop: what step.update reads."""

    def __init__(self, parts: RunParts) -> None:
        self.parts, self.state = parts, RunState.start(parts.cfg)
        self.policy, self.params, self.optimizer = parts.policy, parts.params, parts.optimizer


def make_run(path, *overrides: str, adapter_path=None) -> Run:
    args = [f"model.name_or_path={path}", "model.dtype=fp32", "rollout.max_new_tokens=6",
            f"algo.num_generations={G}", "trainer.prompts_per_step=2", "optim.lr=1e-3",
            "rollout.merge_adapters=off", *overrides]
    if adapter_path is not None:
        args.append(f"model.adapter_path={adapter_path}")
    _, cfg = compose_config("train", args)
    need_ref = cfg.algo.beta > 0
    torch.manual_seed(0)
    policy = build_policy(cfg.model, need_reference=need_ref)
    if adapter_path is None:
        perturb_lora_b(policy.model)
    params = [p for p in policy.model.parameters() if p.requires_grad]
    optimizer, scheduler = build_optimizer(params, cfg.optim, cfg.trainer.max_steps,
                                           policy.device)
    return Run(RunParts(cfg, policy, optimizer, scheduler, params,
                        FixedKLController(cfg.algo.beta), rewards=None, records=[], prompts=[],
                        sampler=None, tracker=_Tracker(), engine=HfEngine(policy)))


def train_on_batch(run: Run, batch: ScoredBatch) -> tuple[dict, torch.Tensor, bool]:
    """step.update, with its numbers under the names metrics.py logs them by."""
    stats = update(run.parts, run.state, batch)
    return update_metrics(stats), stats.advantages, stats.skipped


def scored_batch(run: Run, rewards=None, scored=None, seed: int = 0) -> ScoredBatch:
    torch.manual_seed(seed)
    prompts = [run.policy.tokenizer.apply_chat_template(
        [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in PROMPTS]
    ro = generate(run.policy.model, run.policy.tokenizer, prompts,
                  SamplingSettings(num_samples=G, max_new_tokens=6), merge_adapters="off")
    N = len(PROMPTS) * G
    total = torch.tensor(rewards if rewards is not None else [1.0, 0.0, 0.5, 0.0] * 2)
    return ScoredBatch([0, 1], ro, total, {}, {},
                       torch.ones(N, dtype=torch.bool) if scored is None
                       else torch.tensor(scored))

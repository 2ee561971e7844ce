"""Every name a training step logs, made here from what the step produced.

    step_metrics(batch, stats, state, ...)   one row of metrics.jsonl, in this order:
      update_metrics(stats)                  the loss means of LOSS_MEANS (named by
                                             algo.loss.combine_metrics), loss, grad_norm,
                                             entropy, beta, lr, time/logprob_s, time/train_s
      frac_zero_std, dynamic_sampling/{rounds,filled,prompts_sampled} (with dynamic sampling)
      reward_metrics(...)                    rewards/<component>/{mean,std,errors}
      reward/mean, reward/std, completion_len/mean, completion_len/clipped_frac, repetition,
      time/generate_s, time/reward_s, time/rollout_s, time/step_s, time/sync_s (torchrun:
      rank 0's seconds in collectives, the waits for slower ranks included), tokens_per_s,
      mem/peak_gb (the largest of the ranks'),
      health/oom_retries, rewards/unscored, accuracy (with a correctness reward),
      health/skipped_steps
    eval/<report key>                        added by the loop on eval steps: the held-out
                                             report, flattened by Tracker.log_eval

Left out where nothing was measured: `kl` without a reference (step.update), the token means
when no token counted (combine_metrics). `loss` and `grad_norm` are means over the step's
optimizer updates.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from grpo_cli.trainer.parts import RunState
from grpo_cli.trainer.step import ScoredBatch, StepStats

# The loss means algo.loss.combine_metrics returns, in the order they are logged.
LOSS_MEANS = ("pg_loss", "kl", "clip_ratio", "clip_ratio/low", "clip_ratio/high", "ratio_mean",
              "sampler/is_weight", "sampler/logp_gap")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def update_metrics(stats: StepStats) -> dict[str, float]:
    """What the gradient steps measured."""
    out = {name: stats.loss_means[name] for name in LOSS_MEANS if name in stats.loss_means}
    out.update({
        "loss": _mean(stats.losses), "grad_norm": _mean(stats.grad_norms),
        "entropy": stats.entropy, "beta": stats.beta, "lr": stats.lr,
        "time/logprob_s": stats.time_logprob, "time/train_s": stats.time_train,
    })
    return out


def reward_metrics(components: dict[str, torch.Tensor],
                   errors: dict[str, int]) -> dict[str, float]:
    """rewards/<name>/{mean,std,errors}: mean and population std over the applicable (non-NaN)
    samples (NaN when none applies), and the samples that got the fallback."""
    out = {}
    for name, values in components.items():
        ok = values[~torch.isnan(values)]  # [M]
        out[f"rewards/{name}/mean"] = float(ok.mean()) if ok.numel() else math.nan
        out[f"rewards/{name}/std"] = float(ok.std(unbiased=False)) if ok.numel() else math.nan
        out[f"rewards/{name}/errors"] = float(errors.get(name, 0))
    return out


def accuracy(components: dict[str, torch.Tensor],
             correctness_name: Optional[str]) -> Optional[float]:
    """Share of completions whose correctness reward is 1 (None: no correctness component,
    or no completion). The one definition of the training `accuracy`; `eval/accuracy` is the
    held-out report's, graded with both answer extractions (evaluation/report.py)."""
    if correctness_name is None:
        return None
    values = components[correctness_name]  # [N]
    return float((values == 1.0).float().mean()) if values.numel() else None


def repetition_rate(ids: torch.Tensor, mask: torch.Tensor, n: int = 4) -> float:
    """Mean share of repeated n-grams per completion (0 = none repeated)."""
    rates = []
    for row, m in zip(ids.tolist(), mask.sum(1).tolist()):
        grams = [tuple(row[i:i + n]) for i in range(int(m) - n + 1)]
        if grams:
            rates.append(1.0 - len(set(grams)) / len(grams))
    return sum(rates) / len(rates) if rates else 0.0


def step_metrics(batch: ScoredBatch, stats: StepStats, state: RunState, *,
                 correctness_name: Optional[str], step_s: float,
                 peak_gb: float, sync_s: Optional[float] = None) -> dict[str, float]:
    """The logged row of one step (see the module docstring); `step_s` is the step's wall
    time, `peak_gb` its peak memory, `sync_s` (under torchrun) rank 0's seconds in
    collectives."""
    ro, total = batch.rollout, batch.total
    lengths = ro.lengths.float()
    out = update_metrics(stats)
    out["frac_zero_std"] = batch.frac_zero_std
    if batch.dynamic is not None:
        out.update({"dynamic_sampling/rounds": batch.dynamic.rounds,
                    "dynamic_sampling/filled": batch.dynamic.filled,
                    "dynamic_sampling/prompts_sampled": batch.dynamic.prompts_sampled})
    out.update(reward_metrics(batch.components, batch.errors))
    out.update(batch.reported)  # rewards/<component>/<key> that the components reported
    out.update({
        "reward/mean": float(total.mean()),
        "reward/std": float(total.std()) if len(total) > 1 else 0.0,
        "completion_len/mean": float(lengths.mean()),
        "completion_len/clipped_frac": float(ro.truncated.float().mean()),
        "repetition": repetition_rate(ro.completion_ids, ro.completion_mask),
        "time/generate_s": batch.time_generate, "time/reward_s": batch.time_reward,
        "time/rollout_s": batch.time_generate + batch.time_reward, "time/step_s": step_s,
        **({"time/sync_s": sync_s} if sync_s is not None else {}),
        "tokens_per_s": float(lengths.sum()) / max(batch.time_generate, 1e-9),
        "mem/peak_gb": peak_gb, "health/oom_retries": state.oom_retries,
        # Completions no reward could score: advantage 0, left out of their group's stats.
        "rewards/unscored": float((~batch.scored).sum()),
    })
    acc = accuracy(batch.components, correctness_name)
    if acc is not None:
        out["accuracy"] = acc
    out["health/skipped_steps"] = state.skipped_total
    return out

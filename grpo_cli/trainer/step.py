"""One GRPO step as a typed pipeline: sample and score groups, then take the gradient steps.

    collect(parts, state)         -> ScoredBatch  rollout + rewards; DAPO dynamic sampling
                                                  refills the batch
    update(parts, state, batch)   -> StepStats    advantages, old / reference log-probs, then
                                                  num_iterations passes of mini-batches, each
                                                  accumulated over micro-batches

Neither names a logged metric: trainer/metrics.py turns a ScoredBatch and its StepStats into
the row of metrics.jsonl.

The loss of one micro-batch is normalised by its whole mini-batch's sequence and token
counts (loss.py), so accumulation gives exactly the full-batch gradient. Each micro-batch is
trimmed to its own longest completion and shortest left padding before the forward pass.

Out of memory in the rollout or in a log-prob / backward pass is not fatal (memory.py): the
rollout batch or micro-batch is halved for the rest of the run and the work is redone. A
retry never takes new prompts (the same groups are regenerated or re-trained) and never
repeats an optimizer step (only the mini-batch that failed is redone).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Optional

import torch

from grpo_cli.algo.advantages import REWARD_AGGREGATIONS, compute_advantages, zero_std_mask
from grpo_cli.algo.logprobs import completion_logprobs
from grpo_cli.algo.loss import combine_metrics, grpo_loss
from grpo_cli.algo.policy_losses import high_entropy_mask
from grpo_cli.rollout.engine import Rollout, concat_rollouts
from grpo_cli.trainer.memory import halve_micro_batch, halve_rollout_batch, retry_on_oom
from grpo_cli.trainer.parts import RunParts, RunState
from grpo_cli.trainer.ranks import (
    finish_update,
    global_counts,
    global_entropy_threshold,
    global_loss_parts,
    take_prompts,
)
from grpo_cli.trainer.settings import loss_settings, rollout_seed, sampling_settings


@dataclass
class DynamicSampling:
    """How DAPO's dynamic sampling filled the batch (algo.dynamic_sampling)."""
    rounds: int  # extra sampling rounds
    filled: int  # zero-variance groups that filled the batch after the last round
    prompts_sampled: int  # prompts sampled over every round


@dataclass
class ScoredBatch:
    """The groups one step trains on, scored: what collect() hands to update()."""
    indices: list[int]  # prompt index per group
    rollout: Rollout  # [N = groups x G, ...]
    total: torch.Tensor  # [N] weighted reward
    components: dict[str, torch.Tensor]  # name -> [N] (NaN = not applicable)
    errors: dict[str, int]  # name -> samples that got the fallback (every round of the step)
    scored: torch.Tensor  # [N] bool: some reward scored it (False = left out of advantages)
    time_generate: float = 0.0  # seconds, every round of the step
    time_reward: float = 0.0
    frac_zero_std: float = 0.0  # share of zero-variance groups in the first round
    dynamic: Optional[DynamicSampling] = None  # with algo.dynamic_sampling
    # What reward components reported beyond their values (code_tests' pass rate, ...):
    # means over every completion scored this step, every round included.
    reported: dict[str, float] = field(default_factory=dict)


@dataclass
class StepStats:
    """What update() did with a ScoredBatch."""
    advantages: torch.Tensor  # [N]
    skipped: bool  # some optimizer update was skipped: non-finite loss or gradient norm
    losses: list[float]  # one per optimizer update (mini-batches x iterations)
    grad_norms: list[float]  # the same, before clipping
    loss_means: dict[str, float]  # algo.loss.combine_metrics of the step (kl: a reference ran)
    entropy: float  # mean token entropy of the first pass
    beta: float  # the KL coefficient the step used
    lr: float  # the learning rate the step used
    time_logprob: float  # seconds in the no-grad old / reference passes
    time_train: float  # seconds in the forward / backward passes and optimizer steps


def _score(parts: RunParts, state: RunState, indices: list[int]) -> ScoredBatch:
    cfg, G = parts.cfg, parts.cfg.algo.num_generations
    t0 = time.perf_counter()

    def sample() -> Rollout:
        with parts.tracker.rollout_progress(len(indices) * G) as bar:
            parts.hooks.before_rollout(state.step)
            return parts.engine.generate(
                [parts.prompts[i] for i in indices], sampling_settings(cfg.rollout, G),
                batch_size=state.rollout_batch_size, on_batch=bar.update,
                seed=rollout_seed(cfg.trainer.seed, state.step, indices))

    ro = retry_on_oom(parts, state, "rollout", sample, halve_rollout_batch)
    t1 = time.perf_counter()
    recs = [parts.records[i] for i in indices for _ in range(G)]
    meta_keys = sorted({k for r in recs for k in r.metadata})
    metadata = {k: [r.metadata.get(k) for r in recs] for k in meta_keys}
    result = parts.rewards(
        [parts.prompts[i] for i in indices for _ in range(G)], ro.texts,
        [r.answer for r in recs], completion_ids_len=ro.lengths.tolist(),
        truncated=ro.truncated.tolist(), max_new_tokens=cfg.rollout.max_new_tokens, **metadata)
    t2 = time.perf_counter()
    comps = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in result.per_component.items()}
    total = torch.as_tensor(result.total, dtype=torch.float32)  # [N]
    scored = (result.scored if result.scored is not None
              else torch.ones_like(total, dtype=torch.bool))  # [N]
    return ScoredBatch(indices, ro, total, comps, dict(result.errors), scored, t1 - t0, t2 - t1,
                       reported=dict(result.extra))


def merge_batches(parts: list[ScoredBatch], pad_id: int) -> ScoredBatch:
    if len(parts) == 1:
        return parts[0]
    errors: dict[str, int] = {}
    for p in parts:
        for k, v in p.errors.items():
            errors[k] = errors.get(k, 0) + v
    return ScoredBatch(
        [i for p in parts for i in p.indices], concat_rollouts([p.rollout for p in parts],
                                                                pad_id),
        torch.cat([p.total for p in parts]),
        {k: torch.cat([p.components[k] for p in parts]) for k in parts[0].components},
        errors, torch.cat([p.scored for p in parts]), sum(p.time_generate for p in parts),
        sum(p.time_reward for p in parts))


def pooled_reported(batches: list[ScoredBatch]) -> dict[str, float]:
    """The rounds' reported metrics as means over all their completions."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for b in batches:
        for k, v in b.reported.items():
            sums[k] = sums.get(k, 0.0) + v * len(b.total)
            counts[k] = counts.get(k, 0) + len(b.total)
    return {k: sums[k] / counts[k] for k in sums}


def _select_groups(b: ScoredBatch, groups: list[int], G: int) -> ScoredBatch:
    rows = [g * G + j for g in groups for j in range(G)]
    idx = torch.tensor(rows, dtype=torch.long)
    return ScoredBatch([b.indices[g] for g in groups], b.rollout.select(rows), b.total[idx],
                       {k: v[idx] for k, v in b.components.items()}, b.errors, b.scored[idx],
                       b.time_generate, b.time_reward, reported=b.reported)


def collect(parts: RunParts, state: RunState) -> ScoredBatch:
    """Sample this rank's share of prompts_per_step groups; with dynamic sampling, replace
    zero-variance groups (every rank refills its own share; the rounds end on all ranks
    together, when no rank is short or the rounds are used up)."""
    cfg, G = parts.cfg, parts.cfg.algo.num_generations
    want = cfg.trainer.prompts_per_step // parts.dist.world
    first = _score(parts, state, take_prompts(parts, want))
    first.frac_zero_std = float(zero_std_mask(first.total, G, first.scored).float().mean())
    if not cfg.algo.dynamic_sampling:
        return first
    pad_id = parts.policy.tokenizer.pad_token_id
    kept, dropped, sampled = [], [], [first]
    rounds = 0
    while True:
        batch = sampled[-1]
        zero = zero_std_mask(batch.total, G, batch.scored).tolist()
        kept += [_select_groups(batch, [g], G) for g, z in enumerate(zero) if not z]
        dropped += [_select_groups(batch, [g], G) for g, z in enumerate(zero) if z]
        short = max(0, want - len(kept))
        if not parts.dist.any(short > 0) or rounds >= cfg.algo.dynamic_sampling_max_rounds:
            break
        rounds += 1
        more = take_prompts(parts, short)  # every rank draws, a full one takes none
        if more:
            sampled.append(_score(parts, state, more))
    # Still short after the allowed rounds: fill with zero-variance groups (advantage 0).
    filled = max(0, want - len(kept))
    chosen = (kept[:want] + dropped[:filled])
    merged = merge_batches(chosen, pad_id)
    merged.time_generate = sum(p.time_generate for p in sampled)
    merged.time_reward = sum(p.time_reward for p in sampled)
    # Reward metrics describe the batch that is trained on; errors count every round once.
    merged.errors = {k: sum(p.errors.get(k, 0) for p in sampled) for k in first.errors}
    merged.reported = pooled_reported(sampled)
    merged.frac_zero_std = first.frac_zero_std
    merged.dynamic = DynamicSampling(rounds, filled, sum(len(p.indices) for p in sampled))
    return merged


def _trim(ro: Rollout, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """input_ids / attention_mask of `rows`, cut to their own padding; returns width L_m."""
    pm, cm = ro.prompt_mask[rows], ro.completion_mask[rows]  # [m, P], [m, L]
    start = int((pm.sum(0) > 0).nonzero()[0]) if pm.any() else 0
    Lm = max(int(cm.sum(1).max()), 1)
    ids = torch.cat([ro.prompt_ids[rows][:, start:], ro.completion_ids[rows][:, :Lm]], dim=1)
    mask = torch.cat([pm[:, start:], cm[:, :Lm]], dim=1)
    return ids, mask, Lm


def micro_logprobs(model: Any, ro: Rollout, rows: torch.Tensor, temperature: float,
                   with_entropy: bool = False, entropy_grad: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Completion log-probs (and entropies) of `rows`, padded back to the rollout's width L."""
    ids, mask, Lm = _trim(ro, rows)
    logp, ent = completion_logprobs(model, ids, mask, Lm, temperature, len(rows),
                                    with_entropy=with_entropy or entropy_grad,
                                    entropy_grad=entropy_grad)  # [m, Lm]
    L = ro.completion_ids.shape[1]
    pad = (0, L - Lm)
    logp = torch.nn.functional.pad(logp, pad)  # [m, L]
    return logp, (torch.nn.functional.pad(ent, pad) if ent is not None else None)


@torch.no_grad()
def _all_logprobs(model: Any, ro: Rollout, mbs: int, temperature: float,
                  with_entropy: bool = False) -> Any:
    """No-grad log-probs of every row (old / reference policy), in eval mode: no dropout,
    and the KV cache stays on under gradient checkpointing, so each prompt runs once.
    With `with_entropy`, (log-probs, token entropies), both [N, L]."""
    N = ro.completion_ids.shape[0]
    was_training = model.training
    model.eval()
    try:
        out = [micro_logprobs(model, ro, torch.arange(s, min(s + mbs, N)), temperature,
                              with_entropy=with_entropy) for s in range(0, N, mbs)]
    finally:
        model.train(was_training)
    logp = torch.cat([lp for lp, _ in out])  # [N, L]
    return (logp, torch.cat([e for _, e in out])) if with_entropy else logp


def _keep_high_entropy(parts: RunParts, ent: torch.Tensor | None, loss_mask: torch.Tensor,
                       rows_mini: torch.Tensor) -> torch.Tensor | None:
    """algo.top_entropy_quantile: the tokens of an optimizer step that keep the policy term,
    from the sampling policy's entropies, with one threshold over every rank's tokens."""
    if ent is None:
        return None
    on = loss_mask[rows_mini] > 0  # [m, L]
    threshold = global_entropy_threshold(parts, ent[rows_mini][on],
                                         parts.cfg.algo.top_entropy_quantile)
    keep = torch.zeros(loss_mask.shape, dtype=torch.bool, device=loss_mask.device)  # [N, L]
    keep[rows_mini] = high_entropy_mask(ent[rows_mini], on, threshold)
    return keep


@dataclass
class MiniBatch:
    """What one mini-batch's forward/backward passes left: the gradients sit in .grad."""
    loss: float
    sums: list[dict]  # grpo_loss's sums of each micro-batch
    ent_sum: float


def _accumulate(parts: RunParts, state: RunState, ro: Rollout, rows_mini: torch.Tensor,
                adv: torch.Tensor, loss_mask: torch.Tensor, old_all: torch.Tensor | None,
                ref_all: torch.Tensor | None, beta: float, with_entropy: bool,
                totals: tuple[int, int] | None = None,
                keep: torch.Tensor | None = None) -> MiniBatch:
    """Forward + backward of one mini-batch, micro-batch by micro-batch (grads accumulate).
    `totals`: the optimizer step's (sequences, tokens) over every rank (None: this rank's
    mini-batch is the whole optimizer step). `keep`: [N, L] bool, the tokens that keep the
    policy term (algo.top_entropy_quantile; None = all)."""
    cfg, algo = parts.cfg, parts.cfg.algo
    model, temp = parts.policy.model, cfg.rollout.temperature
    mbs = min(state.micro_batch_size, len(rows_mini))
    num_micro = math.ceil(len(rows_mini) / mbs)
    num_seqs, tokens = totals or (len(rows_mini), int(loss_mask[rows_mini].sum()))
    settings = loss_settings(algo, cfg.rollout.max_new_tokens,
                             beta if ref_all is not None else 0.0)
    out = MiniBatch(0.0, [], 0.0)
    bonus = settings.entropy_coef > 0  # the loss needs the entropies, with their gradient
    for micro, s in enumerate(range(0, len(rows_mini), mbs)):
        rows = rows_mini[s:s + mbs]
        logp, ent = micro_logprobs(model, ro, rows, temp, with_entropy=with_entropy,
                                   entropy_grad=bonus)
        old = old_all[rows] if old_all is not None else logp.detach()
        ref = ref_all[rows] if ref_all is not None else None
        sampler = None
        if ro.sampler_logp is not None:  # NaN rows: drawn by the trainer's own weights
            sampler = ro.sampler_logp[rows]
            sampler = torch.where(torch.isnan(sampler), old, sampler)  # [m, L]
        loss, sums = grpo_loss(logp, old, ref, adv[rows], loss_mask[rows], settings,
                               num_seqs=num_seqs, num_tokens=tokens,
                               sampler_logp=sampler, entropy=ent if bonus else None,
                               policy_mask=keep[rows] if keep is not None else None)
        loss = parts.hooks.on_loss(loss, state.step)
        parts.hooks.before_backward(state.step, micro, num_micro)
        loss.backward()
        out.loss += float(loss.detach())
        out.sums.append(sums)
        if with_entropy and ent is not None:
            out.ent_sum += float((ent.detach() * ro.completion_mask[rows]).sum())
    return out


def _advantage_rewards(cfg: Any, batch: ScoredBatch) -> torch.Tensor:
    """The [N] rewards advantages are taken from, as reward.aggregation says: the weighted
    total, or GDPO's sum of group-normalised components."""
    names = list(batch.components)
    comps = torch.stack([batch.components[k] for k in names], dim=1) if names \
        else batch.total.new_zeros(len(batch.total), 0)  # [N, K]
    weights = torch.tensor([float(cfg.reward.components[k].weight) for k in names])  # [K]
    return REWARD_AGGREGATIONS[cfg.reward.aggregation](
        batch.total, comps, weights, cfg.algo.num_generations, cfg.algo.adv_eps, batch.scored)


def update(parts: RunParts, state: RunState, batch: ScoredBatch) -> StepStats:
    """Advantages, then the gradient steps on one scored batch.

    A mini-batch whose loss or gradient norm is not finite is skipped: no optimizer step, so
    neither the parameters nor the Adam moments change, and the KL controller is not updated.
    """
    cfg, algo = parts.cfg, parts.cfg.algo
    model, ro = parts.policy.model, batch.rollout
    device = ro.completion_ids.device
    adv = compute_advantages(_advantage_rewards(cfg, batch), algo.num_generations,
                             scale=algo.scale_rewards, baseline=algo.baseline,
                             eps=algo.adv_eps, valid=batch.scored).to(device)  # [N]
    loss_mask = ro.completion_mask.float()  # [N, L]
    if algo.mask_truncated:
        loss_mask = loss_mask * (~ro.truncated).float().unsqueeze(1)  # [N, L]
    N = adv.shape[0]
    # The mini-batch (one optimizer step) is fixed by the config; only the micro-batch
    # (one forward/backward) shrinks after an out-of-memory error.
    configured_mbs = min(cfg.trainer.micro_batch_size, N)
    mini = configured_mbs * cfg.trainer.grad_accum_steps if cfg.trainer.grad_accum_steps else N
    num_mini = math.ceil(N / mini)
    temp = cfg.rollout.temperature
    beta = parts.kl_ctl.beta

    t0 = time.perf_counter()
    # top_entropy_quantile picks its tokens from the sampling policy's entropies before the
    # micro-batches, so that all of them (and every rank) keep the whole batch's tokens.
    select = algo.top_entropy_quantile < 1.0
    need_old = algo.num_iterations > 1 or num_mini > 1 or select
    old_all = (retry_on_oom(parts, state, "log-prob pass",
                            lambda: _all_logprobs(model, ro, state.micro_batch_size, temp,
                                                  with_entropy=select),
                            halve_micro_batch) if need_old else None)
    old_ent = None
    if select:
        old_all, old_ent = old_all  # [N, L] each
    ref_all = None
    if beta > 0 or algo.kl_target is not None:
        def reference_logprobs() -> torch.Tensor:
            with parts.policy.reference() as ref_model:
                return _all_logprobs(ref_model, ro, state.micro_batch_size, temp)
        ref_all = retry_on_oom(parts, state, "reference log-prob pass", reference_logprobs,
                               halve_micro_batch)
    t1 = time.perf_counter()

    sums, losses, grad_norms, ent_sum, skipped = [], [], [], 0.0, False
    model.train()
    for it in range(algo.num_iterations):
        for m0 in range(0, N, mini):
            rows_mini = torch.arange(m0, min(m0 + mini, N))
            totals = global_counts(parts, len(rows_mini), int(loss_mask[rows_mini].sum()))
            keep = _keep_high_entropy(parts, old_ent, loss_mask, rows_mini)  # [N, L] | None
            work = partial(_accumulate, parts, state, ro, rows_mini, adv, loss_mask, old_all,
                           ref_all, beta, with_entropy=(it == 0), totals=totals, keep=keep)
            done = retry_on_oom(parts, state, "backward pass", work, halve_micro_batch)
            done.loss = finish_update(parts, done.loss)  # grads and loss: every rank's
            sums += done.sums
            ent_sum += done.ent_sum
            max_norm = cfg.optim.max_grad_norm or float("inf")
            norm = float(torch.nn.utils.clip_grad_norm_(parts.params, max_norm))
            if math.isfinite(norm) and math.isfinite(done.loss):
                parts.optimizer.step()
            else:
                skipped = True
            parts.optimizer.zero_grad(set_to_none=True)
            losses.append(done.loss)
            grad_norms.append(norm)
    lr = parts.optimizer.param_groups[0]["lr"]  # the rate this step used
    parts.scheduler.step()
    t2 = time.perf_counter()

    loss_means = combine_metrics(global_loss_parts(parts, sums), num_updates=len(losses))
    if ref_all is None:
        loss_means.pop("kl", None)  # no reference ran: no KL was measured
    if not skipped and math.isfinite(loss_means.get("kl", math.nan)):
        parts.kl_ctl.update(loss_means["kl"], 1)
    ent_sum, ent_tokens = parts.dist.sum([ent_sum, float(ro.completion_mask.sum())])
    entropy = ent_sum / max(ent_tokens, 1.0)
    return StepStats(adv, skipped, losses, grad_norms, loss_means, entropy, beta, lr,
                     t1 - t0, t2 - t1)

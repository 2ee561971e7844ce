"""One GRPO step: sample groups, score them, compute advantages, and take the gradient steps.

    collect_batch  -> ScoredBatch   (rollout + rewards; DAPO dynamic sampling refills the batch)
    train_on_batch -> metrics       (old / reference log-probs, then num_iterations passes of
                                     mini-batches, each accumulated over micro-batches)

The loss of one micro-batch is normalised by its whole mini-batch's sequence and token
counts (loss.py), so accumulation gives exactly the full-batch gradient. Each micro-batch is
trimmed to its own longest completion and shortest left padding before the forward pass.

Out of memory (a CUDA OutOfMemoryError, or a RuntimeError saying 'out of memory') in the
rollout or in a log-prob / backward pass is not fatal: the half-accumulated gradients are
dropped, the rollout batch or micro-batch is halved for the rest of the run and the work is
redone. A retry never takes new prompts (the same groups are regenerated or re-trained) and
never repeats an optimizer step (only the mini-batch that failed is redone). At one group per
rollout batch or one sequence per micro-batch there is nothing left to halve: a UserError
points to `grpo plan`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Optional, TypeVar

import torch

from grpo_cli.algo.advantages import compute_advantages, zero_std_mask
from grpo_cli.algo.logprobs import completion_logprobs
from grpo_cli.algo.loss import combine_metrics, grpo_loss
from grpo_cli.config.schema import GrpoConfig
from grpo_cli.errors import UserError
from grpo_cli.rollout.engine import Rollout, concat_rollouts, generate
from grpo_cli.trainer import faults
from grpo_cli.trainer.settings import loss_settings, sampling_settings


@dataclass
class Engine:
    """Everything a step needs; built once by train.run."""
    cfg: GrpoConfig
    policy: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    rewards: Any
    kl_ctl: Any
    records: list
    prompts: list[str]
    sampler: Any
    tracker: Any
    params: list = field(default_factory=list)
    step: int = 0  # the step being run (fault hooks and messages)
    # Shrunk after an out-of-memory error, for the rest of the run (0 / None = the config's).
    micro_batch_size: int = 0
    rollout_batch_size: Optional[int] = None
    oom_retries: int = 0

    def __post_init__(self) -> None:
        self.micro_batch_size = self.micro_batch_size or self.cfg.trainer.micro_batch_size
        self.rollout_batch_size = self.rollout_batch_size or self.cfg.rollout.batch_size


T = TypeVar("T")
PLAN_ADVICE = ("this config does not fit in memory; run `grpo plan` with the same arguments "
               "for an estimate, then lower rollout.max_new_tokens or algo.num_generations, or "
               "set model.gradient_checkpointing=true / model.quantization=nf4")


def _retry_on_oom(engine: Engine, what: str, work: Callable[[], T],
                  shrink: Callable[[Engine, str], None]) -> T:
    """work(); after an out-of-memory error: free memory, shrink(engine, what), run it again."""
    while True:
        try:
            return work()
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            if not faults.is_oom(exc):
                raise
        # Outside the except block, so the failed frames (and their tensors) are released.
        faults.free_memory(engine.optimizer)
        shrink(engine, what)
        engine.oom_retries += 1


def _halve_micro_batch(engine: Engine, what: str) -> None:
    old = engine.micro_batch_size
    if old <= 1:
        raise UserError(f"out of memory in the {what} at step {engine.step} even at "
                        f"trainer.micro_batch_size=1: {PLAN_ADVICE}")
    engine.micro_batch_size = old // 2
    engine.tracker.warn(f"step {engine.step}: out of memory in the {what} at micro-batch {old}; "
                        f"retrying with trainer.micro_batch_size={old // 2} for the rest of "
                        "the run")


def _halve_rollout_batch(engine: Engine, what: str) -> None:
    G = engine.cfg.algo.num_generations
    # None = the whole step's batch at once.
    groups = max(1, (engine.rollout_batch_size or engine.cfg.trainer.prompts_per_step * G) // G)
    if groups <= 1:
        raise UserError(f"out of memory in the {what} at step {engine.step} even at one group "
                        f"of algo.num_generations={G} per batch: {PLAN_ADVICE}")
    engine.rollout_batch_size = (groups // 2) * G
    engine.tracker.warn(f"step {engine.step}: out of memory in the {what} at {groups * G} "
                        f"sequences; retrying with rollout.batch_size={engine.rollout_batch_size}"
                        " for the rest of the run")


@dataclass
class ScoredBatch:
    indices: list[int]  # prompt index per group
    rollout: Rollout  # [N = groups x G, ...]
    total: torch.Tensor  # [N] weighted reward
    components: dict[str, torch.Tensor]  # name -> [N] (NaN = not applicable)
    errors: dict[str, int]
    metrics: dict[str, float]
    time_generate: float
    time_reward: float
    scored: torch.Tensor  # [N] bool: some reward scored it (False = left out of advantages)


def _score(engine: Engine, indices: list[int]) -> ScoredBatch:
    cfg, G = engine.cfg, engine.cfg.algo.num_generations
    tok = engine.policy.tokenizer
    t0 = time.perf_counter()

    def sample() -> Rollout:
        with engine.tracker.rollout_progress(len(indices) * G) as bar:
            faults.maybe_oom("rollout", engine.step)
            return generate(engine.policy.model, tok, [engine.prompts[i] for i in indices],
                            sampling_settings(cfg.rollout, G),
                            batch_size=engine.rollout_batch_size, on_batch=bar.update,
                            merge_adapters=cfg.rollout.merge_adapters)

    ro = _retry_on_oom(engine, "rollout", sample, _halve_rollout_batch)
    t1 = time.perf_counter()
    recs = [engine.records[i] for i in indices for _ in range(G)]
    meta_keys = sorted({k for r in recs for k in r.metadata})
    metadata = {k: [r.metadata.get(k) for r in recs] for k in meta_keys}
    result = engine.rewards(
        [engine.prompts[i] for i in indices for _ in range(G)], ro.texts,
        [r.answer for r in recs], completion_ids_len=ro.lengths.tolist(),
        truncated=ro.truncated.tolist(), max_new_tokens=cfg.rollout.max_new_tokens, **metadata)
    t2 = time.perf_counter()
    comps = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in result.per_component.items()}
    total = torch.as_tensor(result.total, dtype=torch.float32)  # [N]
    scored = (result.scored if result.scored is not None
              else torch.ones_like(total, dtype=torch.bool))  # [N]
    return ScoredBatch(indices, ro, total, comps, dict(result.errors), result.metrics(),
                       t1 - t0, t2 - t1, scored)


def _merge(parts: list[ScoredBatch], pad_id: int) -> ScoredBatch:
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
        errors, parts[0].metrics, sum(p.time_generate for p in parts),
        sum(p.time_reward for p in parts), torch.cat([p.scored for p in parts]))


def component_metrics(components: dict[str, torch.Tensor],
                      errors: dict[str, int]) -> dict[str, float]:
    """rewards/<name>/{mean,std,errors} over the applicable (non-NaN) samples."""
    out = {}
    for name, values in components.items():
        ok = values[~torch.isnan(values)]  # [M]
        out[f"rewards/{name}/mean"] = float(ok.mean()) if ok.numel() else math.nan
        out[f"rewards/{name}/std"] = float(ok.std(unbiased=False)) if ok.numel() else math.nan
        out[f"rewards/{name}/errors"] = float(errors.get(name, 0))
    return out


def _select_groups(b: ScoredBatch, groups: list[int], G: int) -> ScoredBatch:
    rows = [g * G + j for g in groups for j in range(G)]
    idx = torch.tensor(rows, dtype=torch.long)
    return ScoredBatch([b.indices[g] for g in groups], b.rollout.select(rows), b.total[idx],
                       {k: v[idx] for k, v in b.components.items()}, b.errors, b.metrics,
                       b.time_generate, b.time_reward, b.scored[idx])


def collect_batch(engine: Engine) -> tuple[ScoredBatch, dict[str, float]]:
    """Sample prompts_per_step groups; with dynamic sampling, replace zero-variance groups."""
    cfg, G = engine.cfg, engine.cfg.algo.num_generations
    want = cfg.trainer.prompts_per_step
    first = _score(engine, engine.sampler.take(want))
    stats = {"frac_zero_std": float(zero_std_mask(first.total, G, first.scored).float().mean())}
    if not cfg.algo.dynamic_sampling:
        return first, stats
    pad_id = engine.policy.tokenizer.pad_token_id
    kept, dropped, sampled = [], [], [first]
    rounds = 0
    while True:
        batch = sampled[-1]
        zero = zero_std_mask(batch.total, G, batch.scored).tolist()
        kept += [_select_groups(batch, [g], G) for g, z in enumerate(zero) if not z]
        dropped += [_select_groups(batch, [g], G) for g, z in enumerate(zero) if z]
        if len(kept) >= want or rounds >= cfg.algo.dynamic_sampling_max_rounds:
            break
        rounds += 1
        sampled.append(_score(engine, engine.sampler.take(want - len(kept))))
    # Still short after the allowed rounds: fill with zero-variance groups (advantage 0).
    filled = max(0, want - len(kept))
    chosen = (kept[:want] + dropped[:filled])
    merged = _merge(chosen, pad_id)
    merged.time_generate = sum(p.time_generate for p in sampled)
    merged.time_reward = sum(p.time_reward for p in sampled)
    # Reward metrics describe the batch that is trained on; errors count every round once.
    merged.errors = {k: sum(p.errors.get(k, 0) for p in sampled) for k in first.errors}
    merged.metrics = component_metrics(merged.components, merged.errors)
    stats.update({"dynamic_sampling/rounds": rounds, "dynamic_sampling/filled": filled,
                  "dynamic_sampling/prompts_sampled": sum(len(p.indices) for p in sampled)})
    return merged, stats


def _trim(ro: Rollout, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """input_ids / attention_mask of `rows`, cut to their own padding; returns width L_m."""
    pm, cm = ro.prompt_mask[rows], ro.completion_mask[rows]  # [m, P], [m, L]
    start = int((pm.sum(0) > 0).nonzero()[0]) if pm.any() else 0
    Lm = max(int(cm.sum(1).max()), 1)
    ids = torch.cat([ro.prompt_ids[rows][:, start:], ro.completion_ids[rows][:, :Lm]], dim=1)
    mask = torch.cat([pm[:, start:], cm[:, :Lm]], dim=1)
    return ids, mask, Lm


def micro_logprobs(model: Any, ro: Rollout, rows: torch.Tensor, temperature: float,
                   with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Completion log-probs of `rows`, padded back to the rollout's width L."""
    ids, mask, Lm = _trim(ro, rows)
    logp, ent = completion_logprobs(model, ids, mask, Lm, temperature, len(rows),
                                    with_entropy=with_entropy)  # [m, Lm]
    L = ro.completion_ids.shape[1]
    pad = (0, L - Lm)
    logp = torch.nn.functional.pad(logp, pad)  # [m, L]
    return logp, (torch.nn.functional.pad(ent, pad) if ent is not None else None)


@torch.no_grad()
def _all_logprobs(model: Any, ro: Rollout, mbs: int, temperature: float) -> torch.Tensor:
    """No-grad log-probs of every row (old / reference policy), in eval mode: no dropout,
    and the KV cache stays on under gradient checkpointing, so each prompt runs once."""
    N = ro.completion_ids.shape[0]
    was_training = model.training
    model.eval()
    try:
        out = [micro_logprobs(model, ro, torch.arange(s, min(s + mbs, N)), temperature)[0]
               for s in range(0, N, mbs)]
    finally:
        model.train(was_training)
    return torch.cat(out)  # [N, L]


@dataclass
class MiniBatch:
    """What one mini-batch's forward/backward passes left: the gradients sit in .grad."""
    loss: float
    parts: list[dict]
    ent_sum: float


def _accumulate(engine: Engine, ro: Rollout, rows_mini: torch.Tensor, adv: torch.Tensor,
                loss_mask: torch.Tensor, old_all: torch.Tensor | None,
                ref_all: torch.Tensor | None, beta: float, with_entropy: bool) -> MiniBatch:
    """Forward + backward of one mini-batch, micro-batch by micro-batch (grads accumulate)."""
    cfg, algo = engine.cfg, engine.cfg.algo
    model, temp = engine.policy.model, cfg.rollout.temperature
    mbs = min(engine.micro_batch_size, len(rows_mini))
    tokens = int(loss_mask[rows_mini].sum())
    out = MiniBatch(0.0, [], 0.0)
    for s in range(0, len(rows_mini), mbs):
        rows = rows_mini[s:s + mbs]
        logp, ent = micro_logprobs(model, ro, rows, temp, with_entropy=with_entropy)
        old = old_all[rows] if old_all is not None else logp.detach()
        ref = ref_all[rows] if ref_all is not None else None
        sampler = None
        if ro.sampler_logp is not None:  # NaN rows: drawn by the trainer's own weights
            sampler = ro.sampler_logp[rows]
            sampler = torch.where(torch.isnan(sampler), old, sampler)  # [m, L]
        loss, sums = grpo_loss(
            logp, old, ref, adv[rows], loss_mask[rows],
            loss_settings(algo, cfg.rollout.max_new_tokens, beta if ref is not None else 0.0),
            num_seqs=len(rows_mini), num_tokens=tokens, sampler_logp=sampler)
        loss = faults.poison_loss(loss, engine.step)
        if s + mbs >= len(rows_mini):  # the last micro-batch: earlier ones left gradients
            faults.maybe_oom("backward", engine.step)
        loss.backward()
        out.loss += float(loss.detach())
        out.parts.append(sums)
        if ent is not None:
            out.ent_sum += float((ent * ro.completion_mask[rows]).sum())
    return out


def train_on_batch(engine: Engine, batch: ScoredBatch) -> tuple[dict[str, float], torch.Tensor,
                                                                 bool]:
    """Gradient steps on one scored batch. Returns (metrics, advantages, any_step_skipped).

    A mini-batch whose loss or gradient norm is not finite is skipped: no optimizer step, so
    neither the parameters nor the Adam moments change, and the KL controller is not updated.
    """
    cfg, algo = engine.cfg, engine.cfg.algo
    model, ro = engine.policy.model, batch.rollout
    device = ro.completion_ids.device
    adv = compute_advantages(batch.total, algo.num_generations, scale=algo.scale_rewards,
                             baseline=algo.baseline, eps=algo.adv_eps,
                             valid=batch.scored).to(device)  # [N]
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
    beta = engine.kl_ctl.beta

    t0 = time.perf_counter()
    need_old = algo.num_iterations > 1 or num_mini > 1
    old_all = (_retry_on_oom(engine, "log-prob pass",
                             lambda: _all_logprobs(model, ro, engine.micro_batch_size, temp),
                             _halve_micro_batch) if need_old else None)
    ref_all = None
    if beta > 0 or algo.kl_target is not None:
        def reference_logprobs() -> torch.Tensor:
            with engine.policy.reference() as ref_model:
                return _all_logprobs(ref_model, ro, engine.micro_batch_size, temp)
        ref_all = _retry_on_oom(engine, "reference log-prob pass", reference_logprobs,
                                _halve_micro_batch)
    t1 = time.perf_counter()

    parts, losses, grad_norms, ent_sum, skipped = [], [], [], 0.0, False
    model.train()
    for it in range(algo.num_iterations):
        for m0 in range(0, N, mini):
            rows_mini = torch.arange(m0, min(m0 + mini, N))
            work = partial(_accumulate, engine, ro, rows_mini, adv, loss_mask, old_all, ref_all,
                           beta, with_entropy=(it == 0))
            done = _retry_on_oom(engine, "backward pass", work, _halve_micro_batch)
            parts += done.parts
            ent_sum += done.ent_sum
            max_norm = cfg.optim.max_grad_norm or float("inf")
            norm = float(torch.nn.utils.clip_grad_norm_(engine.params, max_norm))
            if math.isfinite(norm) and math.isfinite(done.loss):
                engine.optimizer.step()
            else:
                skipped = True
            engine.optimizer.zero_grad(set_to_none=True)
            losses.append(done.loss)
            grad_norms.append(norm)
    lr = engine.optimizer.param_groups[0]["lr"]  # the rate this step used
    engine.scheduler.step()
    t2 = time.perf_counter()

    metrics = combine_metrics(parts, num_updates=len(losses))
    metrics.update({
        "loss": sum(losses) / len(losses), "grad_norm": sum(grad_norms) / len(grad_norms),
        "entropy": ent_sum / max(float(ro.completion_mask.sum()), 1.0), "beta": beta, "lr": lr,
        "time/logprob_s": t1 - t0, "time/train_s": t2 - t1,
    })
    if ref_all is None:
        metrics.pop("kl", None)  # no reference ran: no KL was measured
    if not skipped and math.isfinite(metrics.get("kl", math.nan)):
        engine.kl_ctl.update(metrics["kl"], 1)
    return metrics, adv, skipped


def repetition_rate(ids: torch.Tensor, mask: torch.Tensor, n: int = 4) -> float:
    """Mean share of repeated n-grams per completion (0 = none repeated)."""
    rates = []
    for row, m in zip(ids.tolist(), mask.sum(1).tolist()):
        grams = [tuple(row[i:i + n]) for i in range(int(m) - n + 1)]
        if grams:
            rates.append(1.0 - len(set(grams)) / len(grams))
    return sum(rates) / len(rates) if rates else 0.0

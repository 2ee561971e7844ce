"""`grpo train`: build everything, then loop over steps, then finish. Read it top to bottom.

    run(cfg, dcfg, overrides, notes, hooks)
      build    -> RunParts (built once), RunState (what changes), Checkpointer
        rewards <- rewards.build_reward_stack(cfg.reward, ...) named, weighted reward functions
        data    <- data.read_examples(cfg.data)             read and checked before the model
        policy  <- policy.build_policy(cfg.model)           4-bit base + LoRA, tokenizer, ref
        prompts <- data.build_prompts(examples, tokenizer)  the length filter needs the tokenizer
        optimizer, scheduler, KL controller, prompt sampler; resumed from a checkpoint if asked
      loop     one_step: step.collect -> step.update -> metrics.step_metrics
               -> (held-out eval) -> tracker.log_step -> checkpoints
      finish   checkpoints/final, or the checkpoint and message of a stop

`hooks` (trainer/hooks.py) are no-ops unless a caller passes its own: the reliability tests
inject faults through them.

Under torchrun (WORLD_SIZE > 1) the same loop runs in every rank, data-parallel
(trainer/dist.py, trainer/ranks.py): each rank takes whole groups of the global batch, so
advantages need no communication; the loss counts, the gradients and every decision (skip,
OOM halving, stop) are shared; rank 0 alone writes the run folder.

Faults (tests/reliability proves each):
- Bad input fails during setup, before anything is written: grpo's log lines of the setup are
  held back and dropped on a UserError, so the user sees one `error:` line (exit 2), and
  config.yaml is written only once the model, data and rewards are built.
- A stop request (Ctrl-C, SIGTERM) is honoured at the end of the current step: a checkpoint
  is written and the run exits 130; a second one stops at once, leaving the last checkpoint.
  Under torchrun a stop on any rank stops every rank at the same step.
- Under torchrun, a rank that crashes or is killed makes the others stop with one line
  (the collective they wait in fails: is_peer_lost), naming the newest checkpoint.
- A step whose loss or gradient is not finite applies no update (step.update) and counts in
  health/skipped_steps; trainer.max_bad_steps in a row stop the run (exit 2) with a
  checkpoint whose weights and optimizer state are those of the last good step.
- Out of memory: memory.py halves the batch and retries.
- A checkpoint that cannot be written (disk full) never replaces the previous one
  (checkpoint.Checkpointer); any other disk error in the loop stops with one line naming the
  newest complete checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import random
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from grpo_cli.algo.loss import AdaptiveKLController, FixedKLController
from grpo_cli.config.schema import GrpoConfig, resume_fixed_keys
from grpo_cli.errors import UserError
from grpo_cli.trainer import checkpoint as ckpt
from grpo_cli.trainer.checkpoint import Checkpointer
from grpo_cli.trainer.dist import (
    SINGLE,
    Dist,
    is_peer_lost,
    launched_world_size,
    peer_lost_reason,
    shared_error,
    start_distributed,
)
from grpo_cli.trainer.hooks import NO_HOOKS, Hooks
from grpo_cli.trainer.metrics import step_metrics
from grpo_cli.trainer.optim import build_optimizer
from grpo_cli.trainer.parts import RunParts, RunState
from grpo_cli.trainer.ranks import RankTracker, check_world, global_step_view, sync_state
from grpo_cli.trainer.reporting import reward_template_problems, sample_rows
from grpo_cli.trainer.run_dir import check_run_dir, resume_command
from grpo_cli.trainer.sampler import PromptSampler
from grpo_cli.trainer.settings import rollout_engine
from grpo_cli.trainer.step import collect, update
from grpo_cli.trainer.stop import StopRequest
from grpo_cli.trainer.threads import set_cpu_threads

log = logging.getLogger("grpo")


def run(cfg: GrpoConfig, dcfg: DictConfig, overrides: list[str] | None = None,
        notes: tuple[str, ...] | list[str] = (), hooks: Hooks = NO_HOOKS) -> int:
    """Train; `overrides` (the command line's key=value words) go into the resume hint;
    `notes` (group options that replaced a recipe's values, compose.py) are shown with the
    start-up lines; `hooks` are called at the points trainer/hooks.py lists."""
    check_world(cfg, launched_world_size())
    dist = start_distributed(cfg.model.device, cfg.trainer.dist_timeout_s)
    if not dist.main:  # rank 0 alone speaks and writes (trainer/ranks.py)
        logging.getLogger("grpo").setLevel(logging.WARNING)
    try:
        return _run(cfg, dcfg, Path(cfg.trainer.output_dir), overrides, notes, hooks, dist)
    finally:
        dist.close()


def _run(cfg: GrpoConfig, dcfg: DictConfig, run_dir: Path, overrides: list[str] | None,
         notes: tuple[str, ...] | list[str], hooks: Hooks, dist: Dist) -> int:
    parts, state, checkpointer, test_records = build(cfg, dcfg, run_dir, notes, hooks, dist)
    tracker, resume_hint = parts.tracker, f"resume with: {resume_command(list(overrides or []))}"
    exit_code, step = 0, state.step
    say = print if dist.main else (lambda *a, **k: None)
    try:
        with StopRequest(quiet=not dist.main, same_within_s=2.0 if dist.active else 0.0
                         ) as stop:
            for step in range(state.step + 1, cfg.trainer.max_steps + 1):
                state.step = step
                metrics, samples = one_step(parts, state)
                if cfg.trainer.eval_every and step % cfg.trainer.eval_every == 0:
                    metrics.update(held_out_eval(parts, state, checkpointer, test_records))
                tracker.log_step(step, metrics)
                tracker.log_samples(step, samples, write_file=(
                    step % cfg.trainer.log_every == 0 or step == 1))
                if state.bad_in_a_row >= cfg.trainer.max_bad_steps:
                    stop_after_bad_steps(checkpointer, state)
                if dist.any(stop.signum is not None):  # every rank stops at this step
                    path = checkpointer.save_step(state, ends_run=True)
                    say(f"stopped at step {step}; checkpoint {path}\n{resume_hint}",
                        file=sys.stderr)
                    exit_code = 130
                    break
                if cfg.trainer.save_every and step % cfg.trainer.save_every == 0:
                    checkpointer.save_step(state)
            else:
                checkpointer.save_final(state)
    except KeyboardInterrupt:
        say(f"\nstopped during step {step}; the newest checkpoint in {run_dir}/checkpoints is "
            f"intact\n{resume_hint}", file=sys.stderr)
        exit_code = 130
    except RuntimeError as exc:
        if not (dist.active and is_peer_lost(exc)):
            raise
        raise UserError(f"rank {dist.rank} stopped at step {step}: lost contact with another "
                        f"rank ({peer_lost_reason(exc)}); the launcher's summary names the "
                        "rank that crashed or was killed. The newest complete checkpoint is "
                        f"{ckpt.find_latest(run_dir) or 'none'}; {resume_hint}") from None
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        raise UserError(f"stopped at step {step}: {exc.strerror} ({exc.filename}); the newest "
                        f"complete checkpoint is {ckpt.find_latest(run_dir) or 'none'}: fix it "
                        "and resume with trainer.resume=auto") from None
    finally:
        tracker.close(plot=cfg.logger.plot_at_end and exit_code == 0)
        parts.engine.close()
    return exit_code


def build(cfg: GrpoConfig, dcfg: DictConfig, run_dir: Path,
          notes: tuple[str, ...] | list[str], hooks: Hooks, dist: Dist = SINGLE
          ) -> tuple[RunParts, RunState, Checkpointer, list]:
    """Everything the loop needs, resumed from a checkpoint when trainer.resume says so; the
    test records for the held-out eval.

    Under torchrun rank 0 alone touches the run folder, every rank loads the model and the
    same checkpoint (a shared filesystem across nodes), and a bad input on any rank fails
    every rank (dist.together) with one line from rank 0."""
    from grpo_cli.tracking import build_tracker

    created = dist.together(lambda: prepare_run_dir(run_dir) if dist.main else False)
    with held_logs(run_dir, created) if dist.main else contextlib.nullcontext():
        resume_from = dist.gather(dist.together(
            lambda: _find_resume(cfg, run_dir, notes) if dist.main else None))[0]
        parts = dist.together(lambda: _build_parts(cfg, dcfg, resume_from, hooks, dist))
    if dist.main:  # written once the model, data and rewards are built
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(dcfg))
    state = RunState.start(cfg)
    if resume_from is not None:
        state = RunState.start(cfg, *Checkpointer.restore(
            resume_from, parts.policy, parts.optimizer, parts.scheduler, parts.kl_ctl,
            parts.sampler))
    dist.broadcast_params(parts.params)  # every rank starts from rank 0's weights
    tracker = parts.tracker
    if dist.main:
        tracker = build_tracker(cfg.logger, run_dir, cfg.trainer.run_name,
                                OmegaConf.to_container(dcfg, resolve=True),
                                cfg.trainer.max_steps, start_step=state.step)
        parts = dataclasses.replace(parts, tracker=tracker)
    if dist.active:
        tracker.info(f"data parallel: {dist.world} ranks ({dist.backend}), "
                     f"{cfg.trainer.prompts_per_step // dist.world} prompts per rank per step")
    if resume_from is not None:
        tracker.info(f"resumed from {resume_from} at step {state.step}")
    for problem in reward_template_problems(cfg):
        tracker.warn(problem)
    return parts, state, Checkpointer(parts, run_dir, dcfg), parts.test_records


def _find_resume(cfg: GrpoConfig, run_dir: Path, notes: tuple[str, ...] | list[str]
                 ) -> Path | None:
    """Rank 0: the checkpoint trainer.resume names, after repairing an interrupted save."""
    for note in notes:  # group options that replaced a recipe's values (compose.py)
        log.info("note: %s", note)  # hidden by logger.console=quiet
    ckpt.recover_interrupted(run_dir / "checkpoints")
    resume_from = ckpt.resolve_resume(cfg.trainer.resume, run_dir)
    check_run_dir(run_dir, cfg.trainer.resume, resume_from is not None)
    return resume_from


def _build_parts(cfg: GrpoConfig, dcfg: DictConfig, resume_from: Path | None, hooks: Hooks,
                 dist: Dist) -> RunParts:
    """Rewards, data, policy, optimizer, engine: built on every rank, not yet resumed; the
    tracker is RankTracker until rank 0 builds the real one."""
    from grpo_cli.data import build_prompts, read_examples, render_prompt
    from grpo_cli.policy.model import build_policy
    from grpo_cli.rewards import build_reward_stack

    if resume_from is not None:
        check_resume_compatible(ckpt.load_checkpoint_config(resume_from), dcfg, resume_from)
    seed_everything(cfg.trainer.seed)
    set_cpu_threads(cfg.trainer.cpu_threads, cfg.model.device)
    # The data's answer format is its template (DatasetSplits.answer_format), known before
    # the data loads: the stack is built first, so a bad reward fails before the model.
    rewards = build_reward_stack(cfg.reward, answer_format=cfg.data.template)
    examples = read_examples(cfg.data, cfg.trainer.seed)  # a bad file fails before the model
    need_ref = cfg.algo.beta > 0 or cfg.algo.kl_target is not None
    policy = build_policy(cfg.model, need_reference=need_ref)
    data = build_prompts(examples, policy.tokenizer)
    prompts = [render_prompt(policy.tokenizer, r.prompt) for r in data.train]
    params = [p for p in policy.model.parameters() if p.requires_grad]
    optimizer, scheduler = build_optimizer(params, cfg.optim, cfg.trainer.max_steps,
                                           policy.device)
    engine = rollout_engine(cfg, policy)  # vllm: its own copy of the base, built once
    kl_ctl = (AdaptiveKLController(cfg.algo.beta, cfg.algo.kl_target, cfg.algo.kl_horizon)
              if cfg.algo.kl_target is not None else FixedKLController(cfg.algo.beta))
    return RunParts(cfg, policy, optimizer, scheduler, params, kl_ctl, rewards, data.train,
                    prompts, PromptSampler(len(prompts), cfg.trainer.seed), RankTracker(),
                    engine, hooks, dist, test_records=data.test)

def one_step(parts: RunParts, state: RunState) -> tuple[dict, list[dict]]:
    """collect -> update, timed; the step's logged metrics and its samples rows."""
    device = parts.policy.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0, sync0 = time.perf_counter(), parts.dist.clock["sync_s"]
    batch = collect(parts, state)
    stats = update(parts, state, batch)
    parts.hooks.after_step(state.step, parts.params)
    elapsed = time.perf_counter() - t0
    state.count_step(stats.skipped)
    if stats.skipped:
        parts.tracker.warn(f"step {state.step}: non-finite loss or gradient; update skipped "
                           f"({state.bad_in_a_row} in a row, limit trainer.max_bad_steps="
                           f"{parts.cfg.trainer.max_bad_steps})")
    sync_state(parts, state)  # an OOM halving on one rank halves everywhere
    view = global_step_view(parts, batch, stats, state.oom_retries, peak_memory_gb(device))
    if view is None:  # ranks > 0: rank 0 logs every rank's numbers
        return {}, []
    batch, stats, oom_retries, peak_gb = view
    sync_s = parts.dist.clock["sync_s"] - sync0 if parts.dist.active else None
    metrics = step_metrics(batch, stats, dataclasses.replace(state, oom_retries=oom_retries),
                           correctness_name=parts.rewards.correctness_name, step_s=elapsed,
                           peak_gb=peak_gb, sync_s=sync_s)
    return metrics, sample_rows(parts, batch, stats.advantages)


def held_out_eval(parts: RunParts, state: RunState, checkpointer: Checkpointer,
                  test_records: list) -> dict[str, float]:
    """The eval/... metrics of the test split; the best checkpoint by eval accuracy is kept
    as checkpoints/best."""
    from grpo_cli.evaluation import evaluate_policy

    report = evaluate_policy(parts.policy, test_records, parts.cfg, limit=parts.cfg.eval.limit,
                             engine=parts.engine, dist=parts.dist)
    if report is None:  # ranks > 0: their share went to rank 0, which logs and keeps the best
        return {}
    flat = parts.tracker.log_eval(state.step, report)
    checkpointer.keep_if_best(state, float(report["accuracy"]))
    return flat


def stop_after_bad_steps(checkpointer: Checkpointer, state: RunState) -> None:
    """trainer.max_bad_steps skipped steps in a row: save and stop with one line."""
    # Skipped steps changed neither the weights nor the Adam moments: this checkpoint holds
    # those of the last good step, before the trouble.
    path = checkpointer.save_step(state, ends_run=True, last_good_step=state.last_good,
                                  skipped_in_a_row=state.bad_in_a_row)
    last_good = f"step {state.last_good}" if state.last_good else "the start"
    # Every rank skipped the same steps (the decision uses the summed gradients and loss):
    # each stops here, rank 0 alone says so.
    raise shared_error(
        f"stopped at step {state.step}: {state.bad_in_a_row} steps in a row had a non-finite "
        f"loss or gradient and were skipped; {path} holds the weights of {last_good}, before "
        "the trouble. Try a lower optim.lr, optim.max_grad_norm=1.0, or model.dtype=fp32",
        checkpointer.parts.dist.rank)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# Disk errors that stop a run with one line instead of a traceback.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def prepare_run_dir(run_dir: Path) -> bool:
    """Make sure the run folder can be written before any work starts; True if it is new."""
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"trainer.output_dir={run_dir} is not writable "
                        f"({exc.strerror or exc})") from None
    return created


@contextlib.contextmanager
def held_logs(run_dir: Path, created: bool, patience_s: float = 30.0) -> Iterator[None]:
    """Hold grpo's log lines back during a quick setup: dropped on a UserError.

    Bad input then reads as one `error:` line, and a run folder this run created is removed
    again. A setup that takes longer than `patience_s` (loading a 7B model) shows its lines as
    they come from then on, so a long load is never silent. After any other exception (a bug)
    the held lines are shown, as context for the traceback.
    """
    logger, held = logging.getLogger("grpo"), []
    handlers = logger.handlers[:]
    start = time.monotonic()

    def release() -> None:
        logger.handlers = handlers
        for record in held:
            logger.handle(record)
        held.clear()

    class Hold(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            held.append(record)
            if time.monotonic() - start > patience_s:
                release()

    logger.handlers = [Hold()]
    try:
        yield
    except UserError:
        held.clear()
        if created:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only if still empty
        raise
    finally:
        release()


def check_resume_compatible(saved: DictConfig, current: DictConfig, path: Path) -> None:
    """Refuse a resume that changes a key marked resume_fixed in the schema."""
    for key in resume_fixed_keys():
        before, now = OmegaConf.select(saved, key), OmegaConf.select(current, key)
        if before != now:
            raise UserError(f"cannot resume from {path}: {key} was {before} and is now {now}; "
                            "start a new run (another trainer.output_dir) or set it back")


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB

"""`grpo train`: build everything, then loop over steps. Read it top to bottom.

    run(cfg)
      policy   <- model.build_policy(cfg.model)       4-bit base + LoRA, tokenizer, reference
      data     <- data.read_examples(cfg.data)        read and checked before the model loads
      prompts  <- data.build_prompts(examples, tok)   the length filter needs the tokenizer
      rewards  <- rewards.build_reward_stack(...)     named, weighted reward functions
      loop:    step.collect_batch -> step.train_on_batch -> tracker.log_step -> checkpoints

What was simplified, on purpose: one process, one device; groups of G completions never
leave the process, so advantages need no communication.

Faults (tests/reliability proves each):
- Bad input fails during setup, before anything is written: grpo's log lines of the setup are
  held back and dropped on a UserError, so the user sees one `error:` line (exit 2), and
  config.yaml is written only once the model, data and rewards are built.
- A stop request (Ctrl-C, SIGTERM) is honoured at the end of the current step: a checkpoint
  is written and the run exits 130; a second one stops at once, leaving the last checkpoint.
- A step whose loss or gradient is not finite applies no update (step.train_on_batch) and
  counts in health/skipped_steps; trainer.max_bad_steps in a row stop the run (exit 2) with
  a checkpoint whose weights and optimizer state are those of the last good step.
- Out of memory: step.py halves the batch and retries.
- A checkpoint that cannot be written (disk full) never replaces the previous one. A
  periodic save that fails is a warning and training goes on (space may be freed meanwhile;
  the next save retries); a failed save that ends the run (final, stop, bad steps) and any
  other disk error in the loop stop with one line naming the newest complete checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import random
import signal
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
from grpo_cli.trainer.optim import build_optimizer
from grpo_cli.trainer.reporting import reward_template_problems, sample_rows
from grpo_cli.trainer.run_dir import check_run_dir, resume_command
from grpo_cli.trainer.sampler import PromptSampler
from grpo_cli.trainer.step import Engine, collect_batch, repetition_rate, train_on_batch
from grpo_cli.trainer.threads import set_cpu_threads

log = logging.getLogger("grpo")

class StopRequest:
    """Turns the first SIGINT/SIGTERM into 'stop after this step'; a second one stops now."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        print("\nstop requested: finishing this step and saving a checkpoint "
              "(press Ctrl-C again to stop now; the last checkpoint stays)", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


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


def run(cfg: GrpoConfig, dcfg: DictConfig, overrides: list[str] | None = None,
        notes: tuple[str, ...] | list[str] = ()) -> int:
    """Train; `overrides` (the command line's key=value words) go into the resume hint;
    `notes` (group options that replaced a recipe's values, compose.py) are shown with the
    start-up lines."""
    from grpo_cli.data import build_prompts, read_examples, render_prompt
    from grpo_cli.policy.model import build_policy
    from grpo_cli.rewards import build_reward_stack
    from grpo_cli.tracking import build_tracker

    run_dir = Path(cfg.trainer.output_dir)
    with held_logs(run_dir, prepare_run_dir(run_dir)):
        for note in notes:  # group options that replaced a recipe's values (compose.py)
            log.info("note: %s", note)  # hidden by logger.console=quiet
        ckpt.recover_interrupted(run_dir / "checkpoints")
        resume_from = ckpt.resolve_resume(cfg.trainer.resume, run_dir)
        check_run_dir(run_dir, cfg.trainer.resume, resume_from is not None)
        if resume_from is not None:
            check_resume_compatible(ckpt.load_checkpoint_config(resume_from), dcfg, resume_from)
        seed_everything(cfg.trainer.seed)
        set_cpu_threads(cfg.trainer.cpu_threads, cfg.model.device)

        rewards = build_reward_stack(cfg.reward)
        examples = read_examples(cfg.data, cfg.trainer.seed)  # a bad file fails before the model
        need_ref = cfg.algo.beta > 0 or cfg.algo.kl_target is not None
        policy = build_policy(cfg.model, need_reference=need_ref)
        data = build_prompts(examples, policy.tokenizer)
        prompts = [render_prompt(policy.tokenizer, r.prompt) for r in data.train]
        params = [p for p in policy.model.parameters() if p.requires_grad]
        optimizer, scheduler = build_optimizer(params, cfg.optim, cfg.trainer.max_steps,
                                               policy.device)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(dcfg))
    kl_ctl = (AdaptiveKLController(cfg.algo.beta, cfg.algo.kl_target, cfg.algo.kl_horizon)
              if cfg.algo.kl_target is not None else FixedKLController(cfg.algo.beta))
    sampler = PromptSampler(len(prompts), cfg.trainer.seed)

    start_step, status = 0, {"best": None}
    if resume_from is not None:
        state = ckpt.load_trainer_state(resume_from)
        ckpt.load_policy_weights(policy.model, resume_from / "policy")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        kl_ctl.load_state_dict(state["kl_ctl"])
        sampler.position = state["data_position"]
        start_step, status["best"] = state["step"], state.get("best")
        ckpt.set_rng_state(state["rng"])

    tracker = build_tracker(cfg.logger, run_dir, cfg.trainer.run_name,
                            OmegaConf.to_container(dcfg, resolve=True), cfg.trainer.max_steps,
                            start_step=start_step)
    if resume_from is not None:
        tracker.info(f"resumed from {resume_from} at step {start_step}")
    for problem in reward_template_problems(cfg):
        tracker.warn(problem)
    engine = Engine(cfg, policy, optimizer, scheduler, rewards, kl_ctl, data.train, prompts,
                    sampler, data.answer_format, tracker, params)

    def save(name: str, step: int, *, ends_run: bool = False, **meta) -> Path | None:
        """Write a checkpoint. If it fails: a warning (training goes on) or, when the save
        ends the run, a one-line error; the previous checkpoint stays either way."""
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "kl_ctl": kl_ctl.state_dict(), "data_position": sampler.position,
                 "step": step, "best": status["best"], "rng": ckpt.rng_state()}
        from grpo_cli.policy.model import save_policy

        try:
            path = ckpt.save_checkpoint(run_dir / "checkpoints", name,
                                        save_policy_fn=lambda d: save_policy(policy, d),
                                        trainer_state=state, config=dcfg, step=step,
                                        extra_meta=meta)
        except OSError as exc:
            latest = ckpt.find_latest(run_dir)
            problem = (f"could not write checkpoint {name} at step {step} to "
                       f"{run_dir / 'checkpoints'} ({exc.strerror or exc}); the newest complete "
                       f"checkpoint is {latest or 'none'}")
            if ends_run:
                raise UserError(f"{problem}: free space and resume with trainer.resume=auto"
                                ) from None
            tracker.warn(f"{problem}; training goes on and the next save tries again")
            return None
        if name.startswith("step-"):
            ckpt.prune(run_dir / "checkpoints", cfg.trainer.keep_last)
        tracker.log_checkpoint(path, step)
        return path

    resume_hint = f"resume with: {resume_command(list(overrides or []))}"
    exit_code, bad_in_a_row, skipped_total, step = 0, 0, 0, start_step
    last_good = start_step
    try:
        with StopRequest() as stop:
            for step in range(start_step + 1, cfg.trainer.max_steps + 1):
                engine.step = step
                metrics, samples = one_step(engine, step)
                bad = metrics.pop("_skipped")
                bad_in_a_row = bad_in_a_row + 1 if bad else 0
                last_good = last_good if bad else step
                skipped_total += int(bad)
                metrics["health/skipped_steps"] = skipped_total
                if bad:
                    tracker.warn(f"step {step}: non-finite loss or gradient; update skipped "
                                 f"({bad_in_a_row} in a row, limit trainer.max_bad_steps="
                                 f"{cfg.trainer.max_bad_steps})")
                if cfg.trainer.eval_every and step % cfg.trainer.eval_every == 0:
                    run_eval_during_training(engine, data.test, step, metrics, status, save)
                tracker.log_step(step, metrics)
                tracker.log_samples(step, samples, write_file=(
                    step % cfg.trainer.log_every == 0 or step == 1))
                if bad_in_a_row >= cfg.trainer.max_bad_steps:
                    # Skipped steps changed neither the weights nor the Adam moments: this
                    # checkpoint holds those of the last good step, before the trouble.
                    path = save(f"step-{step}", step, ends_run=True, last_good_step=last_good,
                                skipped_in_a_row=bad_in_a_row)
                    raise UserError(
                        f"stopped at step {step}: {bad_in_a_row} steps in a row had a "
                        f"non-finite loss or gradient and were skipped; {path} holds the "
                        f"weights of {f'step {last_good}' if last_good else 'the start'}, "
                        "before the trouble. Try a lower "
                        "optim.lr, optim.max_grad_norm=1.0, or model.dtype=fp32")
                if stop.signum is not None:
                    path = save(f"step-{step}", step, ends_run=True)
                    print(f"stopped at step {step}; checkpoint {path}\n{resume_hint}",
                          file=sys.stderr)
                    exit_code = 130
                    break
                if cfg.trainer.save_every and step % cfg.trainer.save_every == 0:
                    save(f"step-{step}", step)
            else:
                save("final", cfg.trainer.max_steps, ends_run=True)
    except KeyboardInterrupt:
        print(f"\nstopped during step {step}; the newest checkpoint in {run_dir}/checkpoints is "
              f"intact\n{resume_hint}", file=sys.stderr)
        exit_code = 130
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        raise UserError(f"stopped at step {step}: {exc.strerror} ({exc.filename}); the newest "
                        f"complete checkpoint is {ckpt.find_latest(run_dir) or 'none'}: fix it "
                        "and resume with trainer.resume=auto") from None
    finally:
        tracker.close(plot=cfg.logger.plot_at_end and exit_code == 0)
    return exit_code


def one_step(engine: Engine, step: int) -> tuple[dict, list[dict]]:
    device = engine.policy.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    batch, ds_stats = collect_batch(engine)
    metrics, adv, skipped = train_on_batch(engine, batch)
    elapsed = time.perf_counter() - t0
    ro, total = batch.rollout, batch.total
    lengths = ro.lengths.float()
    gen_tokens = float(lengths.sum())
    metrics.update(ds_stats)
    metrics.update(batch.metrics)
    metrics.update({
        "reward/mean": float(total.mean()), "reward/std": float(total.std()) if len(total) > 1
        else 0.0,
        "completion_len/mean": float(lengths.mean()),
        "completion_len/clipped_frac": float(ro.truncated.float().mean()),
        "repetition": repetition_rate(ro.completion_ids, ro.completion_mask),
        "time/generate_s": batch.time_generate, "time/reward_s": batch.time_reward,
        "time/rollout_s": batch.time_generate + batch.time_reward, "time/step_s": elapsed,
        "tokens_per_s": gen_tokens / max(batch.time_generate, 1e-9),
        "mem/peak_gb": peak_memory_gb(device), "health/oom_retries": engine.oom_retries,
        # Completions no reward could score: advantage 0, left out of their group's stats.
        "rewards/unscored": float((~batch.scored).sum()),
        "_skipped": skipped,
    })
    correctness = engine.rewards.correctness_name  # the component that grades answers
    if correctness is not None:
        metrics["accuracy"] = float((batch.components[correctness] == 1.0).float().mean())
    return metrics, sample_rows(engine, batch, adv)


def run_eval_during_training(engine: Engine, test_records: list, step: int, metrics: dict,
                             status: dict, save) -> None:
    """Held-out eval; the best checkpoint by eval accuracy is kept as checkpoints/best."""
    from grpo_cli.evaluation import evaluate_policy

    report = evaluate_policy(engine.policy, test_records, engine.cfg,
                             limit=engine.cfg.eval.limit)
    metrics.update(engine.tracker.log_eval(step, report))
    acc = float(report["accuracy"])
    if status["best"] is None or acc > status["best"]["accuracy"]:
        status["best"] = {"accuracy": acc, "step": step}
        save("best", step)
        engine.tracker.info(f"step {step}: eval accuracy {acc:.3f} is the best so far; "
                            "saved checkpoints/best")

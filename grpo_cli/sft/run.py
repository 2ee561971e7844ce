"""`grpo sft`: supervised fine-tuning on prompt + completion or chat `messages` rows (the R1
recipe's stages 1 and 4), with grpo train's model building, optimizer, checkpoints, run folder
and tracker.

    build_policy(cfg.model)        NF4 QLoRA / LoRA / full, model.adapter_path to continue one
    load_sft_data                  tokenized rows, loss mask on the completion or on the
                                   assistant turns of `messages` (data.py, chat.py)
    build_optimizer                optim.* and its schedule over trainer.max_steps (or sft.epochs)
    loop over steps:
        sft.batch_size rows (PromptSampler: seeded order, epoch after epoch, resumable)
        in micro-batches of trainer.micro_batch_size rows (with sft.packing: of that many
        sequences of up to sft.max_seq_len tokens, rows packed in them, pack.py):
        backward of sum(nll) / step's tokens
        clip (optim.max_grad_norm), optimizer + scheduler step
        metrics.jsonl through the tracker: sft/loss, lr, grad_norm, tokens_per_s, mem/peak_gb;
        eval/loss (held-out) every sft.eval_every steps and at the end
        Checkpointer: step-N every trainer.save_every, final at the end; Ctrl-C saves and
        stops (exit 130); trainer.resume=auto continues from the newest checkpoint

A checkpoint is grpo train's: `grpo train model.adapter_path=<ckpt>/policy` continues it with
GRPO and `grpo eval checkpoint=<ckpt>` evaluates it. Simplified: one process (no torchrun), no
OOM retry.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from grpo_cli.config.schema import GrpoConfig
from grpo_cli.errors import UserError
from grpo_cli.sft.data import completion_nll, load_sft_data, make_batches

log = logging.getLogger("grpo")


def held_out_loss(model: Any, rows: list, micro: int, pad_id: int, device: Any,
                  pack_len: int | None = None) -> float | None:
    """Mean completion-token loss over `rows` (None when there are none); pack_len: packed
    in sequences of up to that many tokens (None: padded rows)."""
    if not rows:
        return None
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in make_batches(rows, micro, pad_id, pack_len is not None, pack_len or 0):
            batch = {k: v.to(device) for k, v in batch.items()}
            nll, n = completion_nll(model, batch)
            total, count = total + float(nll), count + n
    model.train(was_training)
    return total / max(count, 1)


def train_step(policy: Any, rows: list, micro: int, optimizer: Any, scheduler: Any,
               params: list, max_grad_norm: float, pack_len: int | None = None
               ) -> dict[str, float]:
    """One optimizer step over `rows`: the mean loss over all their completion tokens
    (pack_len: rows packed in sequences of up to that many tokens; None: padded rows)."""
    pad_id = policy.tokenizer.pad_token_id
    pad_id = policy.tokenizer.eos_token_id if pad_id is None else pad_id
    batches = make_batches(rows, micro, pad_id, pack_len is not None, pack_len or 0)
    tokens = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
    optimizer.zero_grad(set_to_none=True)
    loss_sum = 0.0
    for batch in batches:
        batch = {k: v.to(policy.device) for k, v in batch.items()}
        nll, _ = completion_nll(policy.model, batch)
        (nll / tokens).backward()
        loss_sum += float(nll.detach())
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0
                                          else float("inf"))
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    return {"sft/loss": loss_sum / tokens, "grad_norm": float(norm), "lr": lr,
            "tokens": float(tokens)}


def run_sft(cfg: GrpoConfig, dcfg: DictConfig, overrides: list[str]) -> int:
    """`grpo sft` (see the module docstring); returns the exit code."""
    from grpo_cli.algo.loss import FixedKLController
    from grpo_cli.policy.model import build_policy
    from grpo_cli.tracking import build_tracker
    from grpo_cli.trainer import checkpoint as ckpt
    from grpo_cli.trainer.dist import SINGLE, launched_world_size
    from grpo_cli.trainer.hooks import NO_HOOKS
    from grpo_cli.trainer.optim import build_optimizer
    from grpo_cli.trainer.parts import RunState
    from grpo_cli.trainer.run_dir import check_run_dir
    from grpo_cli.trainer.sampler import PromptSampler
    from grpo_cli.trainer.stop import StopRequest
    from grpo_cli.trainer.threads import set_cpu_threads
    from grpo_cli.trainer.train import (
        check_resume_compatible,
        held_logs,
        peak_memory_gb,
        prepare_run_dir,
        seed_everything,
    )

    if launched_world_size() > 1:
        raise UserError("grpo sft runs in one process; run it without torchrun")
    if cfg.sft.epochs is not None and any(o.lstrip("+").startswith("trainer.max_steps=")
                                          for o in overrides):
        raise UserError(f"sft.epochs={cfg.sft.epochs:g} and trainer.max_steps both set the "
                        "length of the run; give one of them")
    run_dir = Path(cfg.trainer.output_dir)
    created = prepare_run_dir(run_dir)
    with held_logs(run_dir, created):
        ckpt.recover_interrupted(run_dir / "checkpoints")
        resume_from = ckpt.resolve_resume(cfg.trainer.resume, run_dir)
        check_run_dir(run_dir, cfg.trainer.resume, resume_from is not None)
        if resume_from is not None:
            check_resume_compatible(ckpt.load_checkpoint_config(resume_from), dcfg, resume_from)
        seed_everything(cfg.trainer.seed)
        set_cpu_threads(cfg.trainer.cpu_threads, cfg.model.device)
        if cfg.data.name == "jsonl" and cfg.data.path:
            from grpo_cli.sft.data import read_rows

            read_rows(cfg.data.path)  # a bad file fails before the model loads
        policy = build_policy(cfg.model, need_reference=False)
        train_rows, test_rows = load_sft_data(cfg, policy.tokenizer)
        cfg.trainer.max_steps = sft_steps(cfg, len(train_rows))
        params = [p for p in policy.model.parameters() if p.requires_grad]
        optimizer, scheduler = build_optimizer(params, cfg.optim, cfg.trainer.max_steps,
                                               policy.device)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(dcfg))
    sampler = PromptSampler(len(train_rows), cfg.trainer.seed)
    # The Checkpointer's parts: what an SFT checkpoint holds (no KL: a fixed 0 keeps the format).
    parts = SimpleNamespace(cfg=cfg, policy=policy, optimizer=optimizer, scheduler=scheduler,
                            kl_ctl=FixedKLController(0.0), sampler=sampler, dist=SINGLE,
                            hooks=NO_HOOKS, tracker=None)
    state = RunState.start(cfg)
    if resume_from is not None:
        state = RunState.start(cfg, *ckpt.Checkpointer.restore(
            resume_from, policy, optimizer, scheduler, parts.kl_ctl, sampler))
    tracker = build_tracker(cfg.logger, run_dir, cfg.trainer.run_name,
                            OmegaConf.to_container(dcfg, resolve=True), cfg.trainer.max_steps,
                            start_step=state.step)
    parts.tracker = tracker
    checkpointer = ckpt.Checkpointer(parts, run_dir, dcfg)
    if resume_from is not None:
        tracker.info(f"resumed from {resume_from} at step {state.step}")
    pad_id = policy.tokenizer.pad_token_id
    pad_id = policy.tokenizer.eos_token_id if pad_id is None else pad_id
    test_rows = test_rows[:cfg.sft.eval_limit] if cfg.sft.eval_limit else test_rows
    micro, step = cfg.trainer.micro_batch_size, state.step
    pack_len = cfg.sft.max_seq_len if cfg.sft.packing else None
    hint = "resume with: grpo sft " + " ".join([*overrides, "trainer.resume=auto"])
    policy.model.train()
    try:
        with StopRequest() as stop:
            for step in range(state.step + 1, cfg.trainer.max_steps + 1):
                state.step = step
                start = time.perf_counter()
                rows = [train_rows[i] for i in sampler.take(cfg.sft.batch_size)]
                metrics = train_step(policy, rows, micro, optimizer, scheduler, params,
                                     cfg.optim.max_grad_norm, pack_len)
                elapsed = time.perf_counter() - start
                metrics.update({"tokens_per_s": metrics["tokens"] / elapsed,
                                "time/step_s": elapsed,
                                "mem/peak_gb": peak_memory_gb(policy.device)})
                last = step == cfg.trainer.max_steps
                if last or (cfg.sft.eval_every and step % cfg.sft.eval_every == 0):
                    loss = held_out_loss(policy.model, test_rows, micro, pad_id,
                                         policy.device, pack_len)
                    if loss is not None:
                        metrics["eval/loss"] = loss
                if not math.isfinite(metrics["sft/loss"]):
                    raise UserError(f"step {step}: the loss is {metrics['sft/loss']}; lower "
                                    "optim.lr (the newest checkpoint is intact)")
                tracker.log_step(step, metrics)
                if _checkpoint_after(checkpointer, state, cfg.trainer.save_every,
                                     stop.signum is not None, hint):
                    return 130
            checkpointer.save_final(state)
    except KeyboardInterrupt:  # a second Ctrl-C, or one while the model loads rows
        print(f"\nstopped during step {step}; the newest checkpoint in {run_dir}/checkpoints "
              f"is intact\n{hint}", file=sys.stderr)
        return 130
    finally:
        tracker.close(plot=step == cfg.trainer.max_steps)
    return 0


def sft_steps(cfg: GrpoConfig, train_rows: int) -> int:
    """The run's steps: trainer.max_steps, or sft.epochs passes over the train rows."""
    if cfg.sft.epochs is None:
        return cfg.trainer.max_steps
    steps = max(1, math.ceil(cfg.sft.epochs * train_rows / cfg.sft.batch_size))
    log.info("sft: %g epochs of %d rows at sft.batch_size=%d = %d steps", cfg.sft.epochs,
             train_rows, cfg.sft.batch_size, steps)
    return steps


def _checkpoint_after(checkpointer: Any, state: Any, save_every: int, stopping: bool,
                      hint: str) -> bool:
    """Save the step just run when a stop was asked (then True: stop) or save_every says so."""
    if stopping:
        path = checkpointer.save_step(state, ends_run=True)
        print(f"stopped at step {state.step}; checkpoint {path}\n{hint}", file=sys.stderr)
        return True
    if save_every and state.step % save_every == 0:
        checkpointer.save_step(state)
    return False

"""`grpo sample`: draw completions per problem, score them, keep the good ones (rejection
sampling, the R1 recipe's stage 3), as rows that `grpo sft` and `data=jsonl` read.

    checkpoint / model -> policy + rollout engine      (trainer.settings.rollout_engine)
    data (sample.split, sample.limit) -> problems
    per chunk of problems:
        evaluation.runner.generate_problems   sample.num_samples completions each, sampled as
                                              grpo eval samples: eval.temperature / top_p /
                                              top_k, eval.max_new_tokens, eval.batch_size
        RewardStack(...)                      each completion's total and components
        keep.select(...)                      sample.keep / max_per_problem / dedupe
        Store.add(...)                        append the kept rows, then the problem's done line
    summary -> printed and written to <out>.summary.json

A kept row: `prompt` (the chat messages the model was given), `completion`, `question` and
`answer` (so `data=jsonl data.path=OUT` reads it as a dataset), `id` (problem id and sample),
`problem_id`, `reward` (total), `rewards` (per component), `correct`, `tokens`, `truncated`,
and the source: `checkpoint`, `model`, `adapter_path`.

A rerun with the same settings skips the finished problems (store.py); a resumed run samples
the rest with seeds of its own, so its completions differ from an uninterrupted run's. Ctrl-C
(or SIGTERM) finishes the chunk of problems in flight, a second one stops at once; either way
the problems on disk are whole, it says how many are done and returns None (exit 130). A user
error after set-up is one `error:` line, and a run that started sample.out leaves nothing
(run_sample). One process only: under torchrun every rank would append to the same file, so
it is refused.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, Optional

from grpo_cli.config.schema import GrpoConfig
from grpo_cli.errors import UserError
from grpo_cli.sample.keep import KeepRule, Scored, format_summary, select, summarize
from grpo_cli.sample.store import Store

log = logging.getLogger("grpo")


def check_sample_config(cfg: GrpoConfig) -> None:
    """The rules of sample.* that the schema cannot state (before any model loads)."""
    from grpo_cli.trainer.dist import launched_world_size

    if launched_world_size() > 1:
        raise UserError("grpo sample runs in one process (every rank would append to the same "
                        "sample.out); run it without torchrun")
    s = cfg.sample
    if not s.out:
        raise UserError("sample.out is required: the JSONL file the kept rows go to "
                        "(sample.out=kept.jsonl)")
    if s.keep == "threshold" and s.threshold is None:
        raise UserError("sample.keep=threshold needs sample.threshold=NUMBER (the total reward "
                        "a completion must reach)")
    if s.keep != "threshold" and s.threshold is not None:
        raise UserError(f"sample.threshold is read only with sample.keep=threshold (got "
                        f"sample.keep={s.keep}); drop it")
    names = list(cfg.reward.components)
    has_correctness = "correctness" in names or any(
        c.fn == "correctness" for c in cfg.reward.components.values())
    if s.keep == "correct" and not has_correctness:
        raise UserError("sample.keep=correct needs a correctness reward component (reward "
                        f"components: {', '.join(names) or 'none'}); use sample.keep=best or "
                        "threshold, or add one: +reward.components.correctness.fn=correctness")


def settings_of(cfg: GrpoConfig) -> dict[str, Any]:
    """What a resumed run must share with the run it continues (store.py)."""
    s, e = cfg.sample, cfg.eval
    return {"checkpoint": cfg.checkpoint, "model.name_or_path": cfg.model.name_or_path,
            "model.adapter_path": cfg.model.adapter_path, "data.name": cfg.data.name,
            "data.path": cfg.data.path, "data.template": cfg.data.template,
            "sample.split": s.split, "sample.num_samples": s.num_samples, "sample.keep": s.keep,
            "sample.threshold": s.threshold, "sample.max_per_problem": s.max_per_problem,
            "sample.dedupe": s.dedupe, "eval.max_new_tokens": e.max_new_tokens,
            "eval.temperature": e.temperature, "eval.top_p": e.top_p, "eval.top_k": e.top_k,
            "reward.components": sorted(cfg.reward.components)}


def _split_name(cfg: GrpoConfig) -> str:
    return cfg.data.train_split if cfg.sample.split == "train" else cfg.data.test_split


def _records(cfg: GrpoConfig, tokenizer: Any) -> list:
    from grpo_cli.data import load_split

    records, _ = load_split(cfg.data, _split_name(cfg), cfg.trainer.seed, tokenizer)
    return records[:cfg.sample.limit] if cfg.sample.limit else records


def _value(x: float) -> Optional[float]:
    return None if math.isnan(x) else float(x)


def _score(rewards: Any, prompt: str, record: Any, problem: Any,
           cfg: GrpoConfig) -> list[Scored]:
    """Every sample of one problem, scored by the reward stack."""
    n = len(problem.completions)
    meta = {k: [record.metadata.get(k)] * n for k in sorted(record.metadata)}
    result = rewards([prompt] * n, problem.completions, [record.answer] * n,
                     completion_ids_len=problem.tokens, truncated=problem.truncated,
                     max_new_tokens=cfg.eval.max_new_tokens, **meta)
    per = {name: [_value(v) for v in t.tolist()] for name, t in result.per_component.items()}
    verdicts = per.get(result.correctness_name) if result.correctness_name else None
    return [Scored(i, text, float(result.total[i]), {k: v[i] for k, v in per.items()},
                   None if verdicts is None or verdicts[i] is None else verdicts[i] >= 1.0,
                   int(problem.tokens[i]), bool(problem.truncated[i]))
            for i, text in enumerate(problem.completions)]


def _row(record: Any, s: Scored, cfg: GrpoConfig) -> dict[str, Any]:
    return {"id": f"{record.id}#{s.index}", "problem_id": record.id, "prompt": record.prompt,
            "completion": s.text, "question": record.question, "answer": record.answer,
            "reward": s.total, "rewards": s.rewards, "correct": s.correct, "tokens": s.tokens,
            "truncated": s.truncated, "checkpoint": cfg.checkpoint,
            "model": cfg.model.name_or_path, "adapter_path": cfg.model.adapter_path}


def run_sample(cfg: GrpoConfig) -> Optional[dict]:
    """`grpo sample` (see the module docstring); returns the summary (None: Ctrl-C).

    A user error after set-up (nothing kept, a reward that refuses a problem) is one `error:`
    line too: grpo's log lines are held back as grpo train holds them during its set-up
    (for the first 30 s; a longer run shows them as they come), and a run that started
    sample.out afresh removes what it wrote (and the folder it made), so a rerun starts clean.
    """
    from grpo_cli.trainer.train import held_logs

    check_sample_config(cfg)
    out = Path(cfg.sample.out)
    created = not out.parent.exists()
    with held_logs(out.parent, created):
        _records(cfg, None)  # a bad data file fails here, before the model loads
        store = Store.open(out, settings_of(cfg))
        fresh = not store.done
        try:
            return _sample(cfg, store)
        except UserError:
            if fresh:
                store.discard()
            raise


def _sample(cfg: GrpoConfig, store: Store) -> Optional[dict]:
    from grpo_cli.data import render_prompt
    from grpo_cli.evaluation.runner import generate_problems
    from grpo_cli.policy.model import build_policy
    from grpo_cli.rewards import build_reward_stack
    from grpo_cli.trainer.settings import rollout_engine
    from grpo_cli.trainer.stop import StopRequest
    from grpo_cli.trainer.threads import set_cpu_threads

    out = store.out
    rule = KeepRule(cfg.sample.keep, cfg.sample.threshold, cfg.sample.max_per_problem,
                    cfg.sample.dedupe)
    rewards = build_reward_stack(cfg.reward, answer_format=cfg.data.template)
    set_cpu_threads(cfg.trainer.cpu_threads, cfg.model.device)
    policy = build_policy(cfg.model, need_reference=False)
    records = _records(cfg, policy.tokenizer)
    done = store.done_ids
    todo = [(i, r) for i, r in enumerate(records) if r.id not in done]
    log.info("sample: %d problems (%d done before), %d samples each, keep=%s, out %s",
             len(records), len(records) - len(todo), cfg.sample.num_samples, rule.keep, out)
    engine = rollout_engine(cfg, policy)
    per_chunk = max(1, cfg.eval.batch_size // cfg.sample.num_samples)
    gen_cfg = dataclasses.replace(
        cfg, eval=dataclasses.replace(cfg.eval, num_samples=cfg.sample.num_samples))
    try:
        # Ctrl-C once: the chunk in flight is finished and written, then it stops; twice: now
        # (the problems on disk are whole either way).
        with StopRequest(doing="finishing the problems being sampled") as stop:
            for start in range(0, len(todo), per_chunk):
                if stop.signum is not None:
                    raise KeyboardInterrupt
                chunk = todo[start:start + per_chunk]
                # Seeded by the problems' places in the split (first_index), as eval seeds.
                problems = generate_problems(policy, [r for _, r in chunk], gen_cfg,
                                             engine=engine, first_index=chunk[0][0])
                for (_, record), problem in zip(chunk, problems):
                    scored = _score(rewards, render_prompt(policy.tokenizer, record.prompt),
                                    record, problem, cfg)
                    kept = select(scored, rule)
                    store.add([_row(record, s, cfg) for s in kept],
                              {"id": record.id, "totals": [s.total for s in scored],
                               "correct": [s.correct for s in scored],
                               "kept_totals": [s.total for s in kept]})
                log.info("sample: %d / %d problems", len(store.done), len(records))
            if stop.signum is not None and len(store.done) < len(records):
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        log.warning("sample: stopped with %d of %d problems done (in %s); rerun the same "
                    "command to sample the rest", len(store.done), len(records), out)
        return None
    finally:
        engine.close()
    summary = summarize(store.done)
    if not summary["kept"]:
        store.discard()
        raise UserError(f"sample.keep={rule.keep}: no completion of the {summary['problems']} "
                        f"problems was kept ({summary['samples']} sampled); nothing written. "
                        "Sample more (sample.num_samples), or keep by another rule "
                        "(sample.keep=best, or threshold with a lower sample.threshold)")
    summary.update(out=str(out), settings=store.settings)
    path = store.write_summary(summary)
    print(format_summary(summary))
    print(f"wrote {out} and {path}")
    return summary

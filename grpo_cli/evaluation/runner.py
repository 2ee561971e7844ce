"""`grpo eval`: generate (or read) completions for the test split, grade them, write a report.

    run_eval(cfg)                          the command: model or completions file -> report
    evaluate_policy(policy, records, cfg)  the shared core, also called by the training loop
                                           every `trainer.eval_every` steps (logs eval/accuracy)
    load_checkpoint_config(path)           a checkpoint's saved config, with one-line errors
                                           (it lives in trainer/checkpoint.py; re-exported here)

Generation is greedy when `eval.num_samples` is 1; with n > 1 it samples with
`eval.temperature` / `top_p` / `top_k`. `eval.max_new_tokens` caps each completion. These
come from the eval config, never from a checkpoint's training run, so that a base model and
a checkpoint are evaluated alike; the report's `config` records them. Problems are
generated in chunks of about `eval.batch_size` sequences, and only texts and lengths are
kept, so long evals do not hold every tensor.

Output folder (`eval.out`, or by default): `<run dir>/eval/<dataset>` for a checkpoint
`<run dir>/checkpoints/<name>`, `outputs/eval/<completions file stem>/<dataset>` for a
completions file, else `outputs/eval/<model short name>/<dataset>`. A folder that already
holds a report.json is refused (one line) unless `eval.overwrite=true`.
Grading and the report format are in report.py; pass@k / maj@k in metrics.py.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from grpo_cli.config.schema import EvalConfig, GrpoConfig, RewardComponent
from grpo_cli.errors import UserError
from grpo_cli.evaluation import code_eval
from grpo_cli.evaluation.completions import load_problems
from grpo_cli.evaluation.report import (
    Grader,
    Problem,
    grade_problems,
    print_report,
    summarize,
    write_report,
)
from grpo_cli.rollout.settings import SamplingSettings
from grpo_cli.trainer.checkpoint import load_checkpoint_config


def model_short_name(name_or_path: str) -> str:
    """`Qwen/Qwen2.5-0.5B-Instruct` -> `Qwen2.5-0.5B-Instruct`; `/a/b/model/` -> `model`."""
    return str(name_or_path).rstrip("/").split("/")[-1] or "model"


def default_out_dir(cfg: GrpoConfig) -> Path:
    """Where the report goes when `eval.out` is not set (see the module docstring)."""
    if cfg.eval.out:
        return Path(cfg.eval.out)
    if cfg.checkpoint:
        return Path(cfg.checkpoint).parent.parent / "eval" / cfg.data.name
    if cfg.eval.completions:
        return Path("outputs") / "eval" / Path(cfg.eval.completions).stem / cfg.data.name
    return Path("outputs") / "eval" / model_short_name(cfg.model.name_or_path) / cfg.data.name


def _answer_timeout(cfg: GrpoConfig) -> float:
    """The correctness reward's timeout when one is configured, else the schema default."""
    for comp in cfg.reward.components.values():
        if comp.fn == "correctness":
            return comp.timeout_s
    return RewardComponent.timeout_s


def make_grader(cfg: GrpoConfig) -> Grader:
    """Extraction in the template's order (strict / flexible), equivalence from the rewards."""
    from grpo_cli.rewards.equivalence import answers_match_many
    from grpo_cli.rewards.extract import DEFAULT_ORDER, extract_answer

    if code_eval.is_code_task(cfg):  # code is run, not read: evaluation/code_eval.py
        return code_eval.describe(cfg)
    template = cfg.data.template
    order = DEFAULT_ORDER[template]
    timeout = _answer_timeout(cfg)
    return Grader(
        extract=lambda text, mode: extract_answer(text, order, mode),
        match_many=lambda preds, golds: answers_match_many(preds, golds, timeout),
        has_format=_format_checker(template),
        description={"template": template, "extraction_order": list(order),
                     "format_check": "strict"})


def _format_checker(template: str) -> Callable[[str], bool]:
    """The strict check of the template's format reward (`#### N` as the last line, a final
    `\\boxed{}`, or the exact R1 tag layout): format_rate is its mean."""
    from grpo_cli.rewards.builtin import FORMAT_CHECKS

    return FORMAT_CHECKS[(template, "strict")]


def eval_sampling(ev: EvalConfig) -> SamplingSettings:
    """What `grpo eval` samples: greedy for one sample per problem, else sampled with
    eval.temperature / top_p / top_k (see the module docstring)."""
    return SamplingSettings(num_samples=ev.num_samples, max_new_tokens=ev.max_new_tokens,
                            temperature=ev.temperature, top_p=ev.top_p, top_k=ev.top_k,
                            greedy=ev.num_samples == 1)


def _generation_settings(cfg: GrpoConfig) -> dict[str, Any]:
    """The report's record of `eval_sampling` and of the engine that generated (None where
    greedy decoding uses no value)."""
    s = eval_sampling(cfg.eval)
    return {"engine": cfg.rollout.engine, "greedy": s.greedy,
            "max_new_tokens": s.max_new_tokens,
            "temperature": None if s.greedy else s.temperature,
            "top_p": None if s.greedy else s.top_p,
            "top_k": None if s.greedy else s.top_k}


def _meta(cfg: GrpoConfig, grader: Grader, source: str, **extra: Any) -> dict[str, Any]:
    """Who/what/when: the model, checkpoint, date and the settings that move the numbers."""
    return {"model": cfg.model.name_or_path, "checkpoint": cfg.checkpoint,
            "adapter_path": cfg.model.adapter_path,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "source": source,
            "config": {**grader.description, **_generation_settings(cfg),
                       "few_shot": cfg.data.few_shot, "test_split": cfg.data.test_split,
                       "seed": cfg.trainer.seed},
            **extra}


def generate_problems(policy: Any, records: Sequence[Any], cfg: GrpoConfig,
                      advance: Optional[Callable[[int], None]] = None,
                      engine: Any = None, first_index: int = 0) -> list[Problem]:
    """Completions for every record, chunk by chunk (about eval.batch_size sequences each),
    by `engine` (None = the hf engine on `policy`); `first_index`: the place of records[0]
    in the whole split (a rank's share starts there)."""
    from grpo_cli.data import render_prompt
    from grpo_cli.rollout.engine import HfEngine

    engine = engine or HfEngine(policy, cfg.rollout.merge_adapters)
    sampling = eval_sampling(cfg.eval)
    n = sampling.num_samples
    per_chunk = max(1, cfg.eval.batch_size // n)
    problems: list[Problem] = []
    for start in range(0, len(records), per_chunk):
        chunk = records[start:start + per_chunk]
        prompts = [render_prompt(policy.tokenizer, r.prompt) for r in chunk]
        # An engine that seeds requests (vllm) gives prompt i seed + i * n and its samples
        # the n seeds from there: counted over the whole split, no two problems share one.
        rollout = engine.generate(prompts, sampling, batch_size=cfg.eval.batch_size,
                                  seed=cfg.trainer.seed + (first_index + start) * n)
        lengths = rollout.lengths.tolist()  # [len(chunk) * n]
        truncated = rollout.truncated.tolist()  # [len(chunk) * n]
        for i, record in enumerate(chunk):
            rows = slice(i * n, (i + 1) * n)  # sample s of prompt i is row i*n + s
            problems.append(Problem(
                id=record.id, gold=record.answer, completions=rollout.texts[rows],
                question=record.question, tokens=[int(t) for t in lengths[rows]],
                truncated=[bool(t) for t in truncated[rows]],
                level=_meta_str(record.metadata.get("level")),
                subject=_meta_str(record.metadata.get("subject"))))
        if advance is not None:
            advance(len(chunk))
    return problems


def _meta_str(value: Any) -> Optional[str]:
    return None if value is None or value == "" else str(value)


def _evaluate(policy: Any, records: Sequence[Any], cfg: GrpoConfig, *, limit: Optional[int],
              advance: Optional[Callable[[int], None]] = None,
              engine: Any = None, dist: Any = None) -> tuple[Optional[dict], list[dict]]:
    records = list(records)[:limit] if limit else list(records)
    if not records:
        raise UserError(f"data.name={cfg.data.name}: the {cfg.data.test_split} split is empty; "
                        "nothing to evaluate")
    grader = make_grader(cfg)
    if dist is None or not dist.active:
        problems = generate_problems(policy, records, cfg, advance, engine)
    else:  # rank r generates the r-th block of records (seeded by their places in the
        # split, as one process seeds them); rank 0 grades them all, in order
        lo, hi = _block(len(records), dist.rank, dist.world)
        shares = dist.gather(generate_problems(policy, records[lo:hi], cfg, advance, engine,
                                               first_index=lo))
        if not dist.main:
            return None, []
        problems = [p for share in shares for p in share]
    if code_eval.is_code_task(cfg):
        return code_eval.grade_and_summarize(problems, cfg)
    rows = grade_problems(problems, grader)
    return summarize(rows, dataset=cfg.data.name), rows


def _block(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rank `rank`'s contiguous share of n items: the first n % world ranks get one more."""
    size, extra = divmod(n, world)
    lo = rank * size + min(rank, extra)
    return lo, lo + size + (1 if rank < extra else 0)


def evaluate_policy(policy: Any, records: Sequence[Any], cfg: GrpoConfig, *,
                    limit: Optional[int] = None, engine: Any = None,
                    dist: Any = None) -> Optional[dict]:
    """Generate for the first `limit` records (all when None), grade, and return the report.

    Used by `run_eval` and by the training loop's held-out eval: no files, no console, and
    the model's train/eval mode is restored by the sampler. The dict holds the metrics only
    (every key of the module docstring of report.py but the run metadata, which `run_eval`
    adds), so that a tracker can log all of its numbers. `engine`: the run's rollout engine
    (None = the hf engine). `dist` (trainer/dist.py, under torchrun): the problems are split
    across the ranks and rank 0 gets the whole report; the other ranks get None.
    """
    report, _ = _evaluate(policy, records, cfg, limit=limit, engine=engine, dist=dist)
    return report


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse to replace an earlier report (before any model loads) unless asked to."""
    if overwrite or not (out / "report.json").is_file():
        return
    try:
        old = json.loads((out / "report.json").read_text())
        what = f" ({old.get('checkpoint') or old.get('model')}, {old.get('date')})"
    except (OSError, ValueError, AttributeError):
        what = ""
    raise UserError(f"eval.out={out} already holds a report{what}; write this one elsewhere "
                    "with eval.out=DIR, or replace it with eval.overwrite=true")


def _test_records(cfg: GrpoConfig, tokenizer: Any) -> tuple[list, dict[str, int]]:
    """The whole test split and the rows dropped from it (tokenizer None = no length filter)."""
    from grpo_cli.data import load_split

    return load_split(cfg.data, cfg.data.test_split, cfg.trainer.seed, tokenizer)


def _grade_file(cfg: GrpoConfig) -> tuple[dict, list[dict]]:
    """Grade eval.completions without a model (the dataset is built only if rows need it)."""
    grader = make_grader(cfg)
    problems = load_problems(cfg.eval.completions, lambda: _test_records(cfg, None)[0],
                             cfg.data.name)
    meta = _meta(cfg, grader, f"completions file {cfg.eval.completions}")
    if code_eval.is_code_task(cfg):
        report, rows = code_eval.grade_and_summarize(problems, cfg, meta)
    else:
        rows = grade_problems(problems, grader)
        report = summarize(rows, dataset=cfg.data.name, meta=meta)
    report["config"].update(engine=None, greedy=None, max_new_tokens=None, temperature=None,
                            top_p=None, top_k=None)  # unknown: the file was generated elsewhere
    report["model"] = str(cfg.eval.completions)  # not the configured model: it ran nowhere
    return report, rows


def _progress(cfg: GrpoConfig, total: int):
    """A rich progress bar over problems (silent with logger.console=quiet)."""
    from rich.progress import Progress

    progress = Progress(disable=cfg.logger.console == "quiet", transient=True)
    task = progress.add_task("eval", total=total)
    return progress, lambda k: progress.advance(task, k)


def run_eval(cfg: GrpoConfig) -> dict:
    """`grpo eval`: build the report, print it as a table, write report.json + samples.jsonl.

    Under torchrun the problems are split across the ranks (rank r generates the r-th
    contiguous block) and rank 0 grades them all and writes the one report: the same
    numbers as one process for greedy decoding, and for sampling with an engine that seeds
    each request (vllm)."""
    from grpo_cli.trainer.dist import SINGLE, start_distributed

    out = default_out_dir(cfg)  # cfg is validated: data.name is a known dataset (schema.py)
    dist = SINGLE if cfg.eval.completions else start_distributed(cfg.model.device,
                                                                 cfg.trainer.dist_timeout_s)
    if not dist.main:  # rank 0 alone speaks and writes
        logging.getLogger("grpo").setLevel(logging.WARNING)
    try:
        dist.together(lambda: check_out_dir(out, cfg.eval.overwrite) if dist.main else None)
        if cfg.eval.completions:
            report, rows = _grade_file(cfg)
        else:
            report, rows = _generate_and_grade(cfg, dist)
            if report is None:  # ranks > 0: rank 0 writes the report
                return {}
    finally:
        dist.close()
    report["out"] = str(out)
    write_report(out, report, rows)
    if cfg.logger.console != "quiet":
        print_report(report)
        print(f"wrote {out / 'report.json'} and {out / 'samples.jsonl'}")
    return report


def _generate_and_grade(cfg: GrpoConfig, dist: Any) -> tuple[Optional[dict], list[dict]]:
    from grpo_cli.trainer.threads import set_cpu_threads

    set_cpu_threads(cfg.trainer.cpu_threads, cfg.model.device)
    policy, records, dropped, engine = dist.together(lambda: _load_for_eval(cfg))
    share = min(len(records), cfg.eval.limit or len(records))
    progress, advance = _progress(cfg, -(-share // dist.world)) if dist.main else (
        contextlib.nullcontext(), None)
    try:
        with progress:
            report, rows = _evaluate(policy, records, cfg, limit=cfg.eval.limit,
                                     advance=advance, engine=engine, dist=dist)
    finally:
        engine.close()
    if report is not None:
        report.update(_meta(cfg, make_grader(cfg), "generated", dropped=dropped))
    return report, rows


def _load_for_eval(cfg: GrpoConfig) -> tuple[Any, list, dict[str, int], Any]:
    from grpo_cli.policy.model import build_policy
    from grpo_cli.trainer.settings import rollout_engine

    policy = build_policy(cfg.model, need_reference=False)
    records, dropped = _test_records(cfg, policy.tokenizer)
    return policy, records, dropped, rollout_engine(cfg, policy)


__all__ = ["run_eval", "evaluate_policy", "load_checkpoint_config", "default_out_dir",
           "make_grader", "model_short_name"]

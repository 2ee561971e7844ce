"""RewardStack: named, weighted reward components, scored with per-sample isolation.

total_i = sum_k w_k * r_ik over the components applicable to sample i (r_ik not None); a sample
with none applicable gets 0. A sample that no component scored itself (each one raised, timed
out or did not apply) is marked unscored (`RewardResult.scored`): the trainer leaves it out of
its group's statistics and gives it advantage 0 (advantages.py), and counts it.

Isolation, per component and batch of N completions:
1. one batch call, in a daemon thread, with a limit of timeout_s * N (the per-sample budget);
2. if it raises or times out, each sample is re-scored alone (num_workers threads, timeout_s
   each); a sample that raises or times out gets the configured `fallback` (None = excluded)
   and counts in rewards/<name>/errors.
A component that returns the wrong number of values, a non-number, or raises UserError fails
at once: that is a bug or a config error, not a flaky sample.
"""

from __future__ import annotations

import inspect
import logging
import math
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from omegaconf import DictConfig, OmegaConf

from grpo_cli.config.schema import RewardComponent, RewardConfig
from grpo_cli.errors import UserError
from grpo_cli.rewards.builtin import REGISTRY, VALIDATORS
from grpo_cli.rewards.isolation import CallOutcome, run_isolated

log = logging.getLogger("grpo")
Values = List[Optional[float]]


@dataclass
class Component:
    """One resolved reward component."""

    name: str
    fn: Callable[..., Sequence[Optional[float]]]
    fn_path: str  # the config's `fn`: a registered name or 'package.module:function'
    weight: float = 1.0
    kwargs: Dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 5.0
    fallback: Optional[float] = 0.0


@dataclass
class RewardResult:
    """Rewards of one batch of N completions."""

    per_component: Dict[str, torch.Tensor]  # name -> [N] float32, NaN where not applicable
    total: torch.Tensor  # [N] weighted sum over the applicable components
    errors: Dict[str, int]  # name -> samples that raised or timed out (got the fallback)
    correctness_name: Optional[str] = None  # the component `accuracy` reads
    # [N] bool: some component scored the sample itself (not a fallback); None = all did.
    scored: Optional[torch.Tensor] = None
    # rewards/<name>/<key> -> value: what a component reported besides its rewards (the code
    # reward's pass and failure rates), see `reported_metrics`.
    extra: Dict[str, float] = field(default_factory=dict)

    def matrix(self) -> torch.Tensor:
        """[N, K] rewards, components in config order (NaN where not applicable)."""
        return torch.stack(list(self.per_component.values()), dim=1)  # [N, K]


def _check_values(name: str, values: Any, expected: int) -> Values:
    """The component's return value as a list of float/None, or UserError."""
    try:
        values = list(values)
    except TypeError:
        raise UserError(f"reward '{name}' returned {type(values).__name__}, "
                        f"expected a list of float | None") from None
    if len(values) != expected:
        raise UserError(f"reward '{name}' returned {len(values)} values "
                        f"for {expected} completions")
    out: Values = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
        elif isinstance(v, (int, float)) or (torch.is_tensor(v) and v.numel() == 1):
            out.append(None if math.isnan(float(v)) else float(v))
        else:
            raise UserError(f"reward '{name}' returned a {type(v).__name__} for completion {i}, "
                            f"expected float | None")
    return out


def _sample_metadata(metadata: Dict[str, Any], i: int, n: int) -> Dict[str, Any]:
    """Metadata for sample i alone: per-sample lists (length n) sliced to [x_i]."""
    return {k: [v[i]] if isinstance(v, (list, tuple)) and len(v) == n else v
            for k, v in metadata.items()}


class RewardStack:
    """Callable: `stack(prompts, completions, answers, **metadata) -> RewardResult`.

    `answer_format` (the prompt template: "r1" | "hash" | "boxed") is fixed when the stack is
    built, for every batch it scores; the stack adds it to each call's metadata.
    """

    def __init__(self, components: Sequence[Component], num_workers: int = 4, *,
                 answer_format: str) -> None:
        self.components = list(components)
        self.num_workers = num_workers
        self.answer_format = answer_format
        self.correctness_name = next(
            (c.name for c in self.components if c.name == "correctness"),
            next((c.name for c in self.components if c.fn_path == "correctness"), None))

    def _score(self, comp: Component, prompts: Sequence[str], completions: Sequence[str],
               answers: Sequence[str], metadata: Dict[str, Any]) -> Tuple[Values, List[int]]:
        """(values, failed samples) of one component over the batch, isolated as the module
        says."""
        n = len(completions)
        kwargs = {**metadata, **comp.kwargs}  # the component's own kwargs win
        batch = run_isolated(
            [lambda: comp.fn(prompts, completions, answers, **kwargs)],
            comp.timeout_s * max(n, 1), 1)[0]
        if batch.status == "ok":
            self._extra.update(reported_metrics(comp.name, [batch.value]))
            return _check_values(comp.name, batch.value, n), []
        self._raise_user_error(batch)
        log.warning("reward '%s': batch call %s; re-scoring %d samples one by one",
                    comp.name, _describe(batch), n)

        def one(i: int) -> Callable[[], Any]:
            kw = {**_sample_metadata(metadata, i, n), **comp.kwargs}
            return lambda: comp.fn([prompts[i]], [completions[i]], [answers[i]], **kw)

        outcomes = run_isolated([one(i) for i in range(n)], comp.timeout_s, self.num_workers)
        values: Values = []
        failed: List[int] = []
        for i, outcome in enumerate(outcomes):
            if outcome.status == "ok":
                values.extend(_check_values(comp.name, outcome.value, 1))
                continue
            self._raise_user_error(outcome)
            failed.append(i)
            values.append(comp.fallback)
        self._extra.update(reported_metrics(
            comp.name, [o.value for o in outcomes if o.status == "ok"]))
        if failed:
            log.warning("reward '%s': %d of %d samples got the fallback %s (sample %d %s)",
                        comp.name, len(failed), n, comp.fallback, failed[0],
                        _describe(outcomes[failed[0]]))
        return values, failed

    @staticmethod
    def _raise_user_error(outcome: CallOutcome) -> None:
        if isinstance(outcome.error, UserError):
            raise outcome.error

    def __call__(self, prompts: Sequence[str], completions: Sequence[str],
                 answers: Sequence[str], **metadata: Any) -> RewardResult:
        n = len(completions)
        if len(prompts) != n or len(answers) != n:
            raise ValueError(f"{len(prompts)} prompts, {n} completions, {len(answers)} answers")
        if "answer_format" in metadata:
            raise TypeError("answer_format is fixed when the stack is built "
                            "(build_reward_stack(cfg, answer_format=...)), not passed per call")
        metadata = {**metadata, "answer_format": self.answer_format}
        per_component: Dict[str, torch.Tensor] = {}
        errors: Dict[str, int] = {}
        total = torch.zeros(n, dtype=torch.float32)  # [N]
        scored = torch.zeros(n, dtype=torch.bool)  # [N]
        self._extra: Dict[str, float] = {}
        for comp in self.components:
            values, failed = self._score(comp, prompts, completions, answers, metadata)
            errors[comp.name] = len(failed)
            rewards = torch.tensor([math.nan if v is None else v for v in values],
                                   dtype=torch.float32)  # [N]
            own = ~torch.isnan(rewards)  # [N]
            own[failed] = False
            scored |= own
            per_component[comp.name] = rewards
            total += torch.nan_to_num(rewards * comp.weight, nan=0.0)  # [N]
        return RewardResult(per_component, total, errors, self.correctness_name, scored,
                            self._extra)


def reported_metrics(name: str, returned: Sequence[Any]) -> Dict[str, float]:
    """A component may return a list with a `metrics` dict of per-sample means (code_tests
    does): rewards/<name>/<key>, averaged over the calls weighted by their sample counts."""
    sums: Dict[str, float] = {}
    counts: Dict[str, int] = {}
    for value in returned:
        for key, v in (getattr(value, "metrics", None) or {}).items():
            sums[key] = sums.get(key, 0.0) + float(v) * len(value)
            counts[key] = counts.get(key, 0) + len(value)
    return {f"rewards/{name}/{k}": sums[k] / counts[k] for k in sums if counts[k]}


def _describe(outcome: CallOutcome) -> str:
    if outcome.status == "timeout":
        return "timed out"
    return f"raised {type(outcome.error).__name__}: {outcome.error}"


def _resolve(name: str, path: str) -> Callable[..., Any]:
    """A registered reward, or the function at 'package.module:function'."""
    if path in REGISTRY:
        return REGISTRY[path]
    where = f"reward.components.{name}.fn='{path}'"
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"{where}: not a registered reward ({', '.join(sorted(REGISTRY))}) "
                        f"nor an import path 'package.module:function'")
    try:
        module = import_module(module_name)
    except Exception as e:  # the user's module failing to import is a config problem
        raise UserError(f"{where}: cannot import '{module_name}' "
                        f"({type(e).__name__}: {e})") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise UserError(f"{where}: module '{module_name}' has no attribute '{attr}'")
    if not callable(fn):
        raise UserError(f"{where}: '{attr}' is a {type(fn).__name__}, not a function")
    return fn


def _check_signature(name: str, path: str, fn: Callable[..., Any],
                     kwargs: Dict[str, Any]) -> None:
    """The function must take (prompts, completions, answers, **metadata) and its kwargs."""
    where = f"reward.components.{name}.fn='{path}'"
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin or C callable: nothing to check
    params = sig.parameters.values()
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        raise UserError(f"{where}: must accept (prompts, completions, answers, **metadata); "
                        f"its signature is {sig}")
    try:
        sig.bind_partial([], [], [], **kwargs)
    except TypeError as e:
        raise UserError(f"{where}: cannot be called as fn(prompts, completions, answers, "
                        f"**kwargs) with kwargs {sorted(kwargs)} ({e}); "
                        f"its signature is {sig}") from None
    if path in REGISTRY:
        named = {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
        unknown = sorted(set(kwargs) - named)
        if unknown:
            raise UserError(f"reward.components.{name}.kwargs: unknown {unknown} for "
                            f"'{path}'; allowed: {sorted(named)}")


def build_component(name: str, spec: RewardComponent) -> Component:
    """Resolve and check one configured component."""
    kwargs = spec.kwargs or {}
    if isinstance(kwargs, DictConfig):  # a config node: plain dicts and lists for the function
        kwargs = OmegaConf.to_container(kwargs, resolve=True)
    kwargs = dict(kwargs)
    fn = _resolve(name, spec.fn)
    _check_signature(name, spec.fn, fn, kwargs)
    if spec.fn in VALIDATORS:
        VALIDATORS[spec.fn](kwargs)
    return Component(name, fn, spec.fn, float(spec.weight), kwargs, float(spec.timeout_s),
                     None if spec.fallback is None else float(spec.fallback))


def build_reward_stack(cfg: RewardConfig, *, answer_format: str) -> RewardStack:
    """The RewardStack of `cfg.reward` for prompts in `answer_format` (the data's template);
    UserError for an unknown, bad or unimportable fn. That there is at least one component is
    a config rule (config/rules.py)."""
    components = [build_component(name, spec) for name, spec in cfg.components.items()]
    for comp in components:
        log.info("reward '%s': %s, weight %g, kwargs %s", comp.name, comp.fn_path,
                 comp.weight, comp.kwargs)
    return RewardStack(components, cfg.num_workers, answer_format=answer_format)

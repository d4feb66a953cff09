"""Dataset preparation, robust CSV reading and `cryptosent data summary`."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from ops.csvio import canonical_label, canonical_labels, read_csv_strings, resolve_columns
from ops.errors import UserError
from ops.settings import DataSettings, TextSettings
from trainer.data import (
    MIN_PER_CLASS_PER_SPLIT,
    PreparedData,
    clean_dataset,
    csv_fingerprint,
    prepare_data,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
KAGGLE = FIXTURES / "kaggle_sample.csv"
TEXT = TextSettings()
DATA = DataSettings()


@pytest.fixture(scope="module")
def kaggle() -> PreparedData:
    return prepare_data(KAGGLE, DATA, TEXT)


def all_rows(prepared: PreparedData) -> list[tuple[str, int]]:
    return [*prepared.train, *prepared.val, *prepared.test]


# -- reading CSVs ------------------------------------------------------------------------------


def test_reads_every_column_as_string() -> None:
    frame, encoding = read_csv_strings(KAGGLE)
    assert encoding == "utf-8"
    assert len(frame) == 40
    assert {"text", "sentiment_label", "user_followers", "sentiment_score"} <= set(frame.columns)
    for column in frame.columns:
        assert all(isinstance(v, str) for v in frame[column]), column
    # Quoted multi-line cells survive.
    assert any("\n" in t for t in frame["text"])


def test_cp1252_fallback() -> None:
    frame, encoding = read_csv_strings(FIXTURES / "cp1252_sample.csv")
    assert encoding == "cp1252"
    assert frame["text"][0].startswith("Café owners")
    assert "“Bitcoin”" in frame["text"][0]


def test_utf8_bom_is_stripped_from_first_column() -> None:
    frame, encoding = read_csv_strings(FIXTURES / "bom_sample.csv")
    assert encoding == "utf-8-sig"
    assert list(frame.columns) == ["id", "text", "sentiment_label"]


def test_compressed_csv(tmp_path: Path) -> None:
    path = tmp_path / "sample.csv.gz"
    path.write_bytes(gzip.compress(b"\xef\xbb\xbftext,sentiment_label\nup only,Positive\n"))
    frame, encoding = read_csv_strings(path)
    assert encoding == "utf-8-sig"
    assert list(frame.columns) == ["text", "sentiment_label"]


def test_short_rows_give_empty_strings(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text("text,sentiment_label,extra\nhello there,Positive\n", encoding="utf-8")
    frame, _ = read_csv_strings(path)
    assert frame["extra"].tolist() == [""]


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda d: d / "missing.csv", "not found"),
        (lambda d: d, "is a directory"),
        (lambda d: _write(d / "empty.csv", b""), "is empty"),
        (
            lambda d: _write(d / "bad.csv", b'text,label\n"unclosed,Positive\n'),
            "not a readable CSV",
        ),
        (lambda d: _write(d / "bin.csv", bytes(range(256)) * 4), "binary file"),
        (lambda d: _write(d / "utf16.csv", "text,label\n".encode("utf-16")), "binary file"),
        (lambda d: _write(d / "odd.csv", b"text,label\n\x81\x8d,Positive\n"), "neither UTF-8"),
    ],
)
def test_unreadable_inputs_are_user_errors(
    tmp_path: Path, make: Callable[[Path], Path], fragment: str
) -> None:
    path = make(tmp_path)
    with pytest.raises(UserError) as info:
        read_csv_strings(path)
    assert info.value.exit_code == 2
    assert fragment in info.value.one_line()
    assert "\n" not in info.value.one_line()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_missing_column_lists_available_and_flag() -> None:
    frame, _ = read_csv_strings(FIXTURES / "bullish_bearish.csv")
    with pytest.raises(UserError) as info:
        resolve_columns(frame, DATA, need_label=True)
    line = info.value.one_line()
    assert "'text'" in line
    assert "'body'" in line
    assert "--text-column" in line
    mapped = DATA.model_copy(update={"text_column": "body", "label_column": "sentiment"})
    cols = resolve_columns(frame, mapped, need_label=True)
    assert (cols.text, cols.label, cols.id) == ("body", "sentiment", None)


def test_missing_label_column_only_matters_when_needed() -> None:
    frame, _ = read_csv_strings(FIXTURES / "bullish_bearish.csv")
    mapped = DATA.model_copy(update={"text_column": "body"})
    assert resolve_columns(frame, mapped, need_label=False).label is None
    with pytest.raises(UserError, match="--label-column"):
        resolve_columns(frame, mapped, need_label=True)


def test_canonical_labels() -> None:
    assert canonical_label("positive", {}) == "Positive"
    assert canonical_label(" NEGATIVE ", {}) == "Negative"
    assert canonical_label("Neutral", {}) == "Neutral"
    assert canonical_label("bullish", {"Bullish": "Positive"}) == "Positive"
    mapping = {"Bullish": "Positive", "Bearish": "negative"}
    assert canonical_labels(["Bullish", "Bearish", "Neutral"], mapping) == [
        "Positive",
        "Negative",
        "Neutral",
    ]


def test_unknown_labels_are_listed_with_the_fix() -> None:
    with pytest.raises(UserError) as info:
        canonical_labels(["Bullish", "Bearish", "Bullish", "Positive"], {})
    line = info.value.one_line()
    assert "'Bullish' (2)" in line
    assert "'Bearish' (1)" in line
    assert "--label-map" in line
    with pytest.raises(UserError, match="not Positive, Negative or Neutral"):
        canonical_label("x", {"x": "Good"})


# -- preparation -------------------------------------------------------------------------------


def test_drop_report_counts_each_step(kaggle: PreparedData) -> None:
    steps = dict(kaggle.report.steps)
    assert [s for s, _ in kaggle.report.steps] == [
        "label_missing",
        "neutral",
        "empty_text",
        "non_english",
        "too_short",
        "empty_after_cleaning",
        "duplicate",
        "conflicting_labels",
    ]
    assert steps["neutral"] == 4
    assert steps["empty_text"] == 1
    assert steps["non_english"] == 1
    assert steps["too_short"] == 1
    assert steps["empty_after_cleaning"] == 1
    assert steps["duplicate"] == 1
    assert steps["conflicting_labels"] == 2
    assert kaggle.report.conflicting_texts == 1
    assert kaggle.report.raw_rows == kaggle.raw_rows == 40
    assert kaggle.report.class_counts == {"Negative": 14, "Positive": 15}
    assert kaggle.report.kept == 40 - sum(steps.values())
    assert kaggle.encoding == "utf-8"
    assert kaggle.csv_sha256 == hashlib.sha256(KAGGLE.read_bytes()).hexdigest()
    assert csv_fingerprint(KAGGLE) == kaggle.csv_sha256


def test_rows_are_cleaned_unique_and_labelled(kaggle: PreparedData) -> None:
    rows = all_rows(kaggle)
    texts = [t for t, _ in rows]
    assert len(texts) == len(set(texts))
    assert "Bitcoin to the moon rocket" in texts
    assert not any("BTC dump incoming" in t for t in texts)  # conflicting labels: all dropped
    assert {label for _, label in rows} == {0, 1}
    assert all("http" not in t and "@" not in t and "#" not in t for t in texts)


def test_split_is_stratified_and_disjoint(kaggle: PreparedData) -> None:
    train, val, test = (set(kaggle.train), set(kaggle.val), set(kaggle.test))
    assert not train & val
    assert not train & test
    assert not val & test
    for split in (kaggle.val, kaggle.test):
        counts = Counter(label for _, label in split)
        assert counts[0] >= MIN_PER_CLASS_PER_SPLIT
        assert counts[1] >= MIN_PER_CLASS_PER_SPLIT
    assert kaggle.split_sizes == {"train": 21, "val": 4, "test": 4}


def test_split_is_deterministic_and_independent_of_row_order(
    kaggle: PreparedData, tmp_path: Path
) -> None:
    again = prepare_data(KAGGLE, DATA, TEXT)
    assert (again.train, again.val, again.test) == (kaggle.train, kaggle.val, kaggle.test)
    lines = KAGGLE.read_text(encoding="utf-8")
    frame, _ = read_csv_strings(KAGGLE)
    shuffled = frame.sample(frac=1.0, random_state=3)
    path = tmp_path / "shuffled.csv"
    shuffled.to_csv(path, index=False)
    assert lines  # the original is untouched
    other = prepare_data(path, DATA, TEXT)
    assert set(other.train) == set(kaggle.train)
    assert set(other.val) == set(kaggle.val)
    assert set(other.test) == set(kaggle.test)
    reseeded = prepare_data(KAGGLE, DATA.model_copy(update={"split_seed": 7}), TEXT)
    assert set(reseeded.test) != set(kaggle.test)


def test_max_samples_is_a_stratified_subset_of_each_split(tmp_path: Path) -> None:
    rng = random.Random(0)
    coins = ["bitcoin", "ether", "the market", "my bag", "this chart", "the whale"]
    moods = ["looks great", "is going down", "will pump soon", "is dead", "keeps rising"]
    lines = ["text,sentiment_label"]
    for i in range(300):
        label = "Positive" if i % 3 else "Negative"
        lines.append(f"post {i}: I think {rng.choice(coins)} {rng.choice(moods)} today,{label}")
    path = tmp_path / "many.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    full = prepare_data(path, DATA, TEXT)
    small = prepare_data(path, DATA, TEXT, max_samples=60)
    assert sum(small.split_sizes.values()) == 60
    assert full.report.kept == 300
    assert dict(small.report.steps)["max_samples"] == 240
    assert set(small.test) <= set(full.test)
    assert set(small.val) <= set(full.val)
    assert set(small.train) <= set(full.train)
    ratio = Counter(label for _, label in all_rows(small))
    assert ratio == {1: 40, 0: 20}
    assert prepare_data(path, DATA, TEXT, max_samples=60).test == small.test


def test_other_encodings_and_label_maps() -> None:
    cp = prepare_data(FIXTURES / "cp1252_sample.csv", DATA, TEXT)
    assert cp.encoding == "cp1252"
    assert any(t.startswith("Café owners in Lisbon") for t, _ in all_rows(cp))
    bom = prepare_data(
        FIXTURES / "bom_sample.csv", DATA.model_copy(update={"id_column": "id"}), TEXT
    )
    assert bom.encoding == "utf-8-sig"
    mapped = DATA.model_copy(
        update={
            "text_column": "body",
            "label_column": "sentiment",
            "label_map": {"Bullish": "Positive", "Bearish": "Negative"},
        }
    )
    bull = prepare_data(FIXTURES / "bullish_bearish.csv", mapped, TEXT)
    assert bull.report.class_counts == {"Negative": 8, "Positive": 7}


@pytest.mark.parametrize(
    ("csv", "data", "fragment"),
    [
        ("missing.csv", DATA, "not found"),
        ("bullish_bearish.csv", DATA, "--text-column"),
        (
            "bullish_bearish.csv",
            DATA.model_copy(update={"text_column": "body", "label_column": "sentiment"}),
            "--label-map",
        ),
        ("single_class.csv", DATA, "no Negative rows"),
    ],
)
def test_bad_inputs_are_user_errors(csv: str, data: DataSettings, fragment: str) -> None:
    with pytest.raises(UserError) as info:
        prepare_data(FIXTURES / csv, data, TEXT)
    assert info.value.exit_code == 2
    assert fragment in info.value.one_line()


def test_nothing_left_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "neutral.csv"
    path.write_text("text,sentiment_label\nmarket is open,Neutral\n,Positive\n", encoding="utf-8")
    with pytest.raises(UserError, match="nothing left"):
        prepare_data(path, DATA, TEXT)


def test_too_few_rows_to_stratify(tmp_path: Path) -> None:
    path = tmp_path / "few.csv"
    rows = [f"bitcoin is going up again number {i},Positive" for i in range(10)]
    rows += [f"bitcoin is going down again number {i},Negative" for i in range(5)]
    path.write_text("text,sentiment_label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="at least 6 per class"):
        prepare_data(path, DATA, TEXT)


def test_clean_dataset_without_split() -> None:
    cleaned = clean_dataset(FIXTURES / "single_class.csv", DATA, TEXT)
    assert cleaned.report.class_counts == {"Negative": 0, "Positive": 14}


# -- the command -------------------------------------------------------------------------------


def _summary(argv: list[str]) -> int:
    from cryptosent.commands import data

    parser = argparse.ArgumentParser(prog="cryptosent")
    data.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "summary", "--env-file", "/nonexistent/.env", *argv])
    code: int = args.handler(args)
    return code


def test_summary_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert _summary(["--csv", str(KAGGLE)]) == 0
    out = capsys.readouterr().out
    for fragment in [
        "rows read",
        "Neutral dropped",
        "duplicates after cleaning",
        "conflicting labels",
        "non-English",
        "class balance",
        "splits (seed 42)",
        "English filter (py3langid)",
    ]:
        assert fragment in out, fragment
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert lines["Negative"][1:] == ["14", "48.3%"]
    assert lines["Positive"][1:] == ["15", "51.7%"]
    assert lines["train"][1] == "21"
    assert lines["fixture"][1] == "100.0%"


def test_summary_with_mapping_flags(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "--csv",
        str(FIXTURES / "bullish_bearish.csv"),
        "--text-column",
        "body",
        "--label-column",
        "sentiment",
        "--label-map",
        "Bullish=Positive,Bearish=Negative",
    ]
    assert _summary(argv) == 0
    assert "Positive" in capsys.readouterr().out


def test_summary_bad_input_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UserError) as info:
        _summary(["--csv", str(FIXTURES / "single_class.csv")])
    assert info.value.exit_code == 2
    # The report is still printed before the error, to show what was left.
    assert "rows read" in capsys.readouterr().out

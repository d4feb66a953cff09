"""Several training sources: the --csv syntax, the YAML spec, cross-source de-duplication,
per-source splits, source weights and the cross-domain training sets. No training here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ops.errors import UserError
from ops.settings import DataSettings, Settings, TextSettings
from trainer.batching import source_weights
from trainer.crossdomain import ALL, baseline_matrix, training_sets
from trainer.dataset import load_splits
from trainer.sources import SourceSpec, load_data_spec, parse_source, prepare_sources

TEXT = TextSettings(lang_backend="none")
DATA = DataSettings()
GOOD = ["rally", "moon", "pump", "breakout", "gains", "bullish", "green", "buying"]
BAD = ["crash", "dump", "rekt", "selloff", "losses", "bearish", "red", "selling"]


def _rows(prefix: str, n: int, *, neg_every: int = 3) -> list[tuple[str, str]]:
    out = []
    for i in range(n):
        neg = i % neg_every == 0
        word = (BAD if neg else GOOD)[i % 8]
        out.append((f"{prefix} {word} number {i} for the coin today", "down" if neg else "up"))
    return out


def _write(path: Path, rows: list[tuple[str, str]], text: str = "text", label: str = "lab") -> Path:
    lines = [f"{text},{label}"] + [f'"{t}",{y}' for t, y in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _spec(path: Path, name: str, **kw: object) -> SourceSpec:
    return SourceSpec(
        path=path,
        name=name,
        text_column=str(kw.get("text", "text")),
        label_column=str(kw.get("label", "lab")),
        label_map={"up": "Positive", "down": "Negative", "meh": "Neutral"},
    )


# -- the --csv syntax and the YAML spec -----------------------------------------------------------


def test_plain_path_is_one_source_named_after_the_file() -> None:
    spec = parse_source("data/tweets.csv")
    assert spec == SourceSpec(Path("data/tweets.csv"), "tweets")


def test_options_override_columns_and_map() -> None:
    spec = parse_source(
        "d/fin.csv:text=body,label=mood,map=Bullish=Positive;Bearish=Negative,name=f"
    )
    assert spec.path == Path("d/fin.csv")
    assert spec.name == "f"
    assert (spec.text_column, spec.label_column) == ("body", "mood")
    assert spec.label_map == {"Bullish": "Positive", "Bearish": "Negative"}
    data = spec.data_settings(DataSettings(label_map={"Hold": "Neutral"}))
    assert data.text_column == "body"
    assert data.label_map == {"Hold": "Neutral", "Bullish": "Positive", "Bearish": "Negative"}


def test_an_existing_file_with_a_colon_is_taken_whole(tmp_path: Path) -> None:
    odd = tmp_path / "a:text=b.csv"
    odd.write_text("text,lab\n", encoding="utf-8")
    assert parse_source(str(odd)).path == odd


@pytest.mark.parametrize("value", ["a.csv:colour=red", "a.csv:text=t,label", "a.csv:map=Bullish"])
def test_bad_options_are_one_clear_error(value: str) -> None:
    with pytest.raises(UserError):
        parse_source(value)


def test_yaml_spec_resolves_paths_next_to_it(tmp_path: Path) -> None:
    spec_file = tmp_path / "sources.yaml"
    spec_file.write_text(
        "sources:\n"
        "  - path: a.csv\n"
        "  - path: /abs/b.csv\n"
        "    name: bee\n"
        "    text: body\n"
        "    map: {Bullish: Positive}\n",
        encoding="utf-8",
    )
    a, b = load_data_spec(spec_file)
    assert a == SourceSpec(tmp_path / "a.csv", "a")
    assert b.path == Path("/abs/b.csv")
    assert (b.name, b.text_column, b.label_map) == ("bee", "body", {"Bullish": "Positive"})


@pytest.mark.parametrize(
    "body",
    ["sources: []\n", "nothing: 1\n", "sources:\n  - name: x\n", "sources:\n  - {path: a, x: 1}\n"],
)
def test_bad_yaml_specs_are_refused(tmp_path: Path, body: str) -> None:
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(body, encoding="utf-8")
    with pytest.raises(UserError):
        load_data_spec(spec_file)


# -- preparation ----------------------------------------------------------------------------------


@pytest.fixture
def two_sources(tmp_path: Path) -> list[SourceSpec]:
    shared_same = ("both sources say rally number 1 for the coin today", "up")
    shared_conflict = ("both sources disagree about this coin today", "up")
    a = [*_rows("alpha", 80), shared_same, shared_conflict, ("meh text for the coin", "meh")]
    b_rows = [*_rows("beta", 50, neg_every=2), shared_same, (shared_conflict[0], "down")]
    b = [(t, y) for t, y in b_rows]
    return [
        _spec(_write(tmp_path / "a.csv", a), "a"),
        _spec(
            _write(tmp_path / "b.csv", b, text="body", label="mood"), "b", text="body", label="mood"
        ),
    ]


def test_duplicates_across_sources_kept_once_conflicts_dropped(
    two_sources: list[SourceSpec],
) -> None:
    a, b = prepare_sources(two_sources, DATA, TEXT)
    texts_a = {t for t, _ in [*a.data.train, *a.data.val, *a.data.test]}
    texts_b = {t for t, _ in [*b.data.train, *b.data.val, *b.data.test]}
    assert not texts_a & texts_b
    same = "both sources say rally number 1 for the coin today"
    assert same in texts_a
    assert not any("disagree" in t for t in texts_a | texts_b)
    assert a.data.report.removed("neutral") == 1
    assert a.data.report.removed("conflicting_across_sources") == 1
    assert a.data.report.removed("duplicate_across_sources") == 0
    assert b.data.report.removed("duplicate_across_sources") == 1
    assert b.data.report.removed("conflicting_across_sources") == 1
    assert b.data.report.kept == 50


def test_every_source_has_its_own_stratified_splits(two_sources: list[SourceSpec]) -> None:
    for source in prepare_sources(two_sources, DATA, TEXT):
        for split in (source.data.train, source.data.val, source.data.test):
            assert {y for _, y in split} == {0, 1}


def test_split_data_groups_follow_the_sources(two_sources: list[SourceSpec]) -> None:
    settings = Settings(_env_file=None, text=TEXT, data=DATA)
    data = load_splits(two_sources, settings, max_samples=None)
    assert data.names == ["a", "b"]
    assert len(data.train_groups) == len(data.train)
    for k, source in enumerate(data.sources):
        rows = [r for r, g in zip(data.test, data.test_groups, strict=True) if g == k]
        assert rows == source.test
    only_b = data.subset(["b"])
    assert only_b.train == data.sources[1].train
    assert data.csv_name == "a.csv+b.csv"
    assert data.rows["b.kept"] == 50


def test_max_samples_is_shared_in_proportion(two_sources: list[SourceSpec]) -> None:
    full = prepare_sources(two_sources, DATA, TEXT)
    sizes = [s.data.report.kept for s in full]
    half = prepare_sources(two_sources, DATA, TEXT, max_samples=sum(sizes) // 2)
    kept = [s.data.report.kept for s in half]
    assert sum(kept) == sum(sizes) // 2
    assert abs(kept[0] / kept[1] - sizes[0] / sizes[1]) < 0.2
    # A subsample's test rows are test rows of the full data too.
    for small, big in zip(half, full, strict=True):
        assert set(small.data.test) <= set(big.data.test)


def test_source_names_must_be_unique(two_sources: list[SourceSpec]) -> None:
    with pytest.raises(UserError, match="unique"):
        prepare_sources([two_sources[0], two_sources[0]], DATA, TEXT)


# -- balancing and the cross-domain sets ----------------------------------------------------------


def test_source_weights_make_every_source_weigh_the_same() -> None:
    groups = [0] * 30 + [1] * 10
    w = source_weights(groups)
    assert w[:30].sum() == pytest.approx(w[30:].sum())
    assert w.sum() == pytest.approx(len(groups))


def test_weighted_step_matches_plain_weighted_cross_entropy() -> None:
    import torch
    from torch.nn import functional as nnf

    logits = torch.tensor([[0.2, 1.0], [1.5, -0.3], [0.1, 0.1]])
    labels = torch.tensor([1, 0, 1])
    class_w = torch.tensor([2.0, 0.5])
    plain = nnf.cross_entropy(logits, labels, weight=class_w)
    per_row = nnf.cross_entropy(logits, labels, reduction="none")
    w = torch.ones(3) * class_w[labels]
    # What train_step computes with all-equal source weights: the same as the class weights alone.
    assert float((per_row * w).sum() / w.sum()) == pytest.approx(float(plain))


def test_training_sets_without_repeats() -> None:
    assert training_sets(["a"]) == [(ALL, ["a"])]
    assert training_sets(["a", "b"]) == [(ALL, ["a", "b"]), ("only b", ["b"]), ("only a", ["a"])]
    labels = [label for label, _ in training_sets(["a", "b", "c"])]
    assert labels == [ALL, "without a", "without b", "without c", "only a", "only b", "only c"]


def test_baseline_matrix_marks_held_out_sources(two_sources: list[SourceSpec]) -> None:
    settings = Settings(_env_file=None, text=TEXT, data=DATA)
    data = load_splits(two_sources, settings, max_samples=None)
    rows = baseline_matrix(data, seed=0)
    assert [r["trained_on"] for r in rows] == [ALL, "only b", "only a"]
    only_b = rows[1]["test"]
    assert only_b["a"]["held_out"] is True
    assert only_b["b"]["held_out"] is False
    assert all(0.0 <= c["macro_f1"] <= 1.0 for r in rows for c in r["test"].values())
    assert np.isfinite([c["macro_f1"] for r in rows for c in r["test"].values()]).all()

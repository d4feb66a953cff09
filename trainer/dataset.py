"""The trainer's view of prepared data: a thin adapter over `trainer.data`.

`trainer.data` owns reading, cleaning, de-duplication and the split; this module only reshapes
its results into what training, evaluation and the report need (flat row counts for the
artifact's data fingerprint, a labeled drop table for report.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.settings import DataSettings, Settings, TextSettings
from trainer.data import STEP_LABELS, DropReport, clean_dataset
from trainer.sources import SourceSpec, combined_fingerprint, prepare_sources

Rows = list[tuple[str, int]]


def _flat_counts(report: DropReport) -> dict[str, int]:
    """raw rows, what each step removed, what is left, per class: one flat str -> int map."""
    out = {"raw_rows": report.raw_rows}
    out.update({f"dropped_{step}": n for step, n in report.steps})
    out["kept"] = report.kept
    out.update({f"kept_{name.lower()}": n for name, n in report.class_counts.items()})
    return out


def _drop_table(report: DropReport) -> list[dict[str, Any]]:
    return [
        {"step": step, "description": STEP_LABELS.get(step, step), "removed": n}
        for step, n in report.steps
    ]


@dataclass
class SourceSplit:
    """One source's own splits and drop report."""

    name: str
    train: Rows
    val: Rows
    test: Rows
    csv_name: str
    csv_sha256: str
    rows: dict[str, int] = field(default_factory=dict)
    drop_table: list[dict[str, Any]] = field(default_factory=list)
    spec: dict[str, Any] = field(default_factory=dict)


@dataclass
class SplitData:
    """All sources together (what the model trains on) and each on its own (what it is scored
    on). With one source the two views hold the same rows."""

    sources: list[SourceSplit]
    csv_name: str
    csv_sha256: str
    train: Rows = field(init=False)
    val: Rows = field(init=False)
    test: Rows = field(init=False)
    # The source index of every row of train / val / test, in the same order.
    train_groups: list[int] = field(init=False)
    val_groups: list[int] = field(init=False)
    test_groups: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.train, self.train_groups = self._concat("train")
        self.val, self.val_groups = self._concat("val")
        self.test, self.test_groups = self._concat("test")

    def _concat(self, split: str) -> tuple[Rows, list[int]]:
        rows: Rows = []
        groups: list[int] = []
        for i, s in enumerate(self.sources):
            part: Rows = getattr(s, split)
            rows.extend(part)
            groups.extend([i] * len(part))
        return rows, groups

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    @property
    def rows(self) -> dict[str, int]:
        if len(self.sources) == 1:
            return dict(self.sources[0].rows)
        out = {
            key: sum(s.rows.get(key, 0) for s in self.sources)
            for key in ("raw_rows", "kept", "kept_negative", "kept_positive")
        }
        out.update({f"{s.name}.{k}": v for s in self.sources for k, v in s.rows.items()})
        return out

    @property
    def drop_table(self) -> list[dict[str, Any]]:
        if len(self.sources) == 1:
            return list(self.sources[0].drop_table)
        return [{**d, "source": s.name} for s in self.sources for d in s.drop_table]

    def subset(self, names: Sequence[str]) -> SplitData:
        """The same splits, restricted to some sources (cross-domain runs train on subsets)."""
        keep = [s for s in self.sources if s.name in set(names)]
        return SplitData(
            sources=keep,
            csv_name="+".join(s.csv_name for s in keep),
            csv_sha256=self.csv_sha256 if len(keep) == len(self.sources) else "",
        )

    def fingerprint_rows(self) -> dict[str, int]:
        return {**self.rows, "train": len(self.train), "val": len(self.val), "test": len(self.test)}


@dataclass
class AllRows:
    rows_kept: Rows
    csv_name: str
    csv_sha256: str
    rows: dict[str, int] = field(default_factory=dict)
    drop_table: list[dict[str, Any]] = field(default_factory=list)


def load_splits(
    sources: Path | Sequence[SourceSpec], settings: Settings, *, max_samples: int | None
) -> SplitData:
    """Clean with `settings.text` and split each source per `settings.data` (a UserError when it
    cannot). A bare path is one source read with the global column flags."""
    specs = (
        [SourceSpec(Path(sources), Path(sources).stem)] if isinstance(sources, Path) else sources
    )
    prepared = prepare_sources(specs, settings.data, settings.text, max_samples=max_samples)
    splits = [
        SourceSplit(
            name=p.spec.name,
            train=list(p.data.train),
            val=list(p.data.val),
            test=list(p.data.test),
            csv_name=p.data.csv_path.name,
            csv_sha256=p.data.csv_sha256,
            rows=_flat_counts(p.data.report),
            drop_table=_drop_table(p.data.report),
            spec=p.spec.as_dict(settings.data),
        )
        for p in prepared
    ]
    if len(splits) == 1:
        return SplitData(splits, csv_name=splits[0].csv_name, csv_sha256=splits[0].csv_sha256)
    return SplitData(
        splits,
        csv_name="+".join(s.csv_name for s in splits),
        csv_sha256=combined_fingerprint(prepared),
    )


def load_all(csv: Path, mapping: DataSettings, text: TextSettings) -> AllRows:
    """Every usable labeled row, no split: for scoring a model on a dataset it never saw."""
    cleaned = clean_dataset(csv, mapping, text)
    return AllRows(
        rows_kept=list(cleaned.examples),
        csv_name=cleaned.csv_path.name,
        csv_sha256=cleaned.csv_sha256,
        rows=_flat_counts(cleaned.report),
        drop_table=_drop_table(cleaned.report),
    )

"""The trainer's view of prepared data: a thin adapter over `trainer.data`.

`trainer.data` owns reading, cleaning, de-duplication and the split; this module only reshapes
its results into what training, evaluation and the report need (flat row counts for the
artifact's data fingerprint, a labeled drop table for report.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.settings import DataSettings, Settings, TextSettings
from trainer.data import STEP_LABELS, DropReport, clean_dataset, prepare_data

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
class SplitData:
    train: Rows
    val: Rows
    test: Rows
    csv_name: str
    csv_sha256: str
    rows: dict[str, int] = field(default_factory=dict)
    drop_table: list[dict[str, Any]] = field(default_factory=list)

    def fingerprint_rows(self) -> dict[str, int]:
        return {**self.rows, "train": len(self.train), "val": len(self.val), "test": len(self.test)}


@dataclass
class AllRows:
    rows_kept: Rows
    csv_name: str
    csv_sha256: str
    rows: dict[str, int] = field(default_factory=dict)
    drop_table: list[dict[str, Any]] = field(default_factory=list)


def load_splits(csv: Path, settings: Settings, *, max_samples: int | None) -> SplitData:
    """Clean with `settings.text` and split per `settings.data` (a UserError when it cannot)."""
    prepared = prepare_data(csv, settings.data, settings.text, max_samples=max_samples)
    return SplitData(
        train=list(prepared.train),
        val=list(prepared.val),
        test=list(prepared.test),
        csv_name=prepared.csv_path.name,
        csv_sha256=prepared.csv_sha256,
        rows=_flat_counts(prepared.report),
        drop_table=_drop_table(prepared.report),
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

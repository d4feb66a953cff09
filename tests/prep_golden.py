"""The golden outputs of the text pipeline (tests/fixtures/prep_golden.jsonl), shared by the tests
of the in-thread pipeline (tests/unit/test_prep.py) and of the worker processes
(tests/unit/test_prep_pool.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from stream.core.text import CleanResult

GOLDEN = Path(__file__).resolve().parent / "fixtures" / "prep_golden.jsonl"
Row = dict[str, str | None]


def golden_rows() -> dict[str, list[Row]]:
    """The recorded rows, by text configuration name."""
    out: dict[str, list[Row]] = {}
    for line in GOLDEN.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        out.setdefault(row["config"], []).append(row)
    return out


def mismatches(
    config: str, rows: Sequence[Row], results: Sequence[CleanResult]
) -> list[tuple[Row, Row]]:
    """(recorded, produced) for every row whose cleaning result differs from the recording."""
    got = [
        {
            "config": config,
            "raw": r["raw"],
            "text": res.text,
            "skip": res.skip_reason and res.skip_reason.value,
            "language": res.language,
        }
        for r, res in zip(rows, results, strict=True)
    ]
    return [(want, have) for want, have in zip(rows, got, strict=True) if want != have]

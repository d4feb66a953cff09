"""Shared by the `cryptosent train` tests in tests/unit (refusals) and tests/slow (training)."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "train_small.csv"
FIGURES = ("confusion_matrix.png", "roc_curve.png", "pr_curve.png", "reliability_diagram.png")
HEADER = "message_id,created_at,username,likes,text,sentiment_label\n"


def train_args(base: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--csv",
        str(FIXTURE),
        "--base-model",
        str(base),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--max-length",
        "32",
        "--lr",
        "1e-3",
        "--evals-per-epoch",
        "2",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]

"""bench/train_lever_probe.py's self-training step keeps the most confident share of each class
the teacher predicts, so a majority class cannot crowd out the other, and files what it kept."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import train_lever_probe as probe  # noqa: E402


def test_each_predicted_class_keeps_its_most_confident_share() -> None:
    # rows 0-5 are predicted POSITIVE, rows 6-7 NEGATIVE; a global top half would take
    # four POSITIVE rows and no NEGATIVE one.
    positive = [0.99, 0.6, 0.95, 0.7, 0.98, 0.8, 0.3, 0.45]
    proba = np.array([[1 - p, p] for p in positive])

    assert probe.confident_per_class(proba, 0.5) == [0, 2, 4, 6]
    assert probe.confident_per_class(proba, 1.0) == list(range(8))
    assert probe.confident_per_class(proba, 0.0) == []


def test_ties_keep_row_order() -> None:
    proba = np.array([[0.1, 0.9]] * 4)

    assert probe.confident_per_class(proba, 0.5) == [0, 1]


def test_pseudo_label_runs_get_their_own_table() -> None:
    run = {
        "kind": "pseudo_label",
        "teacher": "/tmp/teacher",
        "out": "/tmp/pseudo.csv",
        "texts": 10,
        "kept": 5,
        "share": 0.5,
        "labels": {"Positive": 3, "Negative": 2},
        "min_confidence": 0.87,
        "date": "2026-12-04T00:00:00+00:00",
    }

    md = probe.markdown([run])

    assert "## Pseudo-labels" in md
    assert "| /tmp/teacher | /tmp/pseudo.csv | 10 | 5 | 0.5 | Negative 2, Positive 3 | 0.87 |" in md


def test_probe_rows_name_each_pseudo_labeled_file() -> None:
    run = {
        "kind": "probe",
        "mean_pool": False,
        "args": [
            "--csv",
            "/d/tfn.csv:name=tfn",
            "--csv=/tmp/p25.csv:name=pseudo",
            "--threads",
            "1",
        ],
        "seconds": 5,
        "val_macro_f1_stocktwits": 0.65,
        "val_macro_f1_tfn": 0.9,
        "date": "2026-12-04T00:00:00+00:00",
    }

    md = probe.markdown([run])

    assert "| tfn + pseudo (p25.csv) | minilm | [CLS] + pooler | 0.65 | 0.9 | 5 |" in md

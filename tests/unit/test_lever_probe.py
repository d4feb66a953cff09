"""bench/train_lever_probe.py's self-training step keeps the most confident share of each class
the teacher predicts, so a majority class cannot crowd out the other, and files what it kept;
bench/fusion_probe.py's mix curve runs from the baseline alone to the model alone."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import fusion_probe  # noqa: E402
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


def test_fusion_curve_ends_are_the_two_models() -> None:
    truth = np.array([0, 0, 1, 1])
    # the model gets rows 0-2 right, the baseline rows 1-3; the even mix gets all four.
    p_model = np.array([[0.9, 0.1], [0.6, 0.4], [0.4, 0.6], [0.7, 0.3]])
    p_base = np.array([[0.45, 0.55], [0.9, 0.1], [0.2, 0.8], [0.1, 0.9]])

    curve = fusion_probe.fusion_curve(truth, p_model, p_base)

    assert curve[1.0] == curve[0.0] == 0.7333  # (0.8 + 2/3) / 2 for each alone
    assert curve[0.5] == 1.0
    assert sorted(curve) == list(fusion_probe.ALPHAS)


def test_fusion_runs_get_one_row_per_scored_source() -> None:
    run = {
        "kind": "fusion",
        "artifact": "/tmp/a",
        "trained_on": ["tfn"],
        "baseline": "word+char, C=2.0",
        "val_macro_f1": {
            "stocktwits": {
                "model": 0.64,
                "baseline": 0.58,
                "mix_0.5": 0.66,
                "best_alpha": 0.5,
                "best": 0.66,
            },
            "tfn": {
                "model": 0.9,
                "baseline": 0.86,
                "mix_0.5": 0.91,
                "best_alpha": 0.7,
                "best": 0.92,
            },
        },
        "date": "2026-12-04T00:00:00+00:00",
    }

    md = probe.markdown([run])

    assert (
        "| /tmp/a | tfn | word+char, C=2.0 | stocktwits | 0.64 | 0.58 | 0.66 | 0.66 (a = 0.5) |"
        in md
    )
    assert "| tfn | 0.9 | 0.86 | 0.91 | 0.92 (a = 0.7) |" in md

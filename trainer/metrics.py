"""Classification metrics for a binary NEGATIVE/POSITIVE classifier, as plain JSON-able dicts.

One function serves the fine-tuned model and the TF-IDF baseline, so the two columns of the
report are computed the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from schemas.messages import Label
from stream.core.planning import softmax
from trainer.calibration import (
    DEFAULT_BINS,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
)

LABELS: tuple[Label, Label] = (Label.NEGATIVE, Label.POSITIVE)
NEGATIVE, POSITIVE = 0, 1


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Accuracy, F1s, per-class table, ROC-AUC, PR-AUC (both classes), confusion matrix, ECE.

    Threshold-free scores are None when the labels hold one class only (a cross-dataset CSV can):
    they are undefined there, and a made-up 0.5 would read as a measurement.
    """
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    y = np.asarray(labels).astype(np.int64)
    p = np.asarray(probs, dtype=np.float64)
    pred = p.argmax(axis=1)
    both = len(np.unique(y)) == 2
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=[NEGATIVE, POSITIVE], zero_division=0
    )
    per_class = {
        str(LABELS[i]): {
            "precision": _rounded(precision[i]),
            "recall": _rounded(recall[i]),
            "f1": _rounded(f1[i]),
            "support": int(support[i]),
        }
        for i in (NEGATIVE, POSITIVE)
    }
    return {
        "n": len(y),
        "accuracy": _rounded(accuracy_score(y, pred)),
        "macro_f1": _rounded(
            f1_score(y, pred, labels=[NEGATIVE, POSITIVE], average="macro", zero_division=0)
        ),
        "weighted_f1": _rounded(
            f1_score(y, pred, labels=[NEGATIVE, POSITIVE], average="weighted", zero_division=0)
        ),
        "per_class": per_class,
        "roc_auc": _rounded(roc_auc_score(y, p[:, POSITIVE])) if both else None,
        "pr_auc_positive": _rounded(average_precision_score(y == POSITIVE, p[:, POSITIVE]))
        if both
        else None,
        # NEGATIVE is the minority class on StockTwits, so its PR-AUC is the harder number.
        "pr_auc_negative": _rounded(average_precision_score(y == NEGATIVE, p[:, NEGATIVE]))
        if both
        else None,
        "confusion_matrix": {
            "labels": [str(label) for label in LABELS],
            "rows": "true label",
            "columns": "predicted label",
            "matrix": confusion_matrix(y, pred, labels=[NEGATIVE, POSITIVE]).tolist(),
        },
        "ece": _rounded(expected_calibration_error(p, y, DEFAULT_BINS)),
    }


def model_metrics(labels: np.ndarray, logits: np.ndarray, temperature: float) -> dict[str, Any]:
    """Metrics of the calibrated probabilities plus ECE/NLL before and after temperature scaling.

    Dividing logits by T > 0 never changes the argmax, so accuracy and F1 are the same either way.
    """
    y = np.asarray(labels).astype(np.int64)
    raw = softmax(logits, 1.0)
    scaled = softmax(logits, temperature)
    out = classification_metrics(y, scaled)
    out["calibration"] = {
        "temperature": _rounded(temperature),
        "n_bins": DEFAULT_BINS,
        "ece_before": _rounded(expected_calibration_error(raw, y, DEFAULT_BINS)),
        "ece_after": _rounded(expected_calibration_error(scaled, y, DEFAULT_BINS)),
        "nll_before": _rounded(negative_log_likelihood(logits, y, 1.0)),
        "nll_after": _rounded(negative_log_likelihood(logits, y, temperature)),
    }
    return out


def majority_accuracy(labels: np.ndarray) -> float:
    y = np.asarray(labels).astype(np.int64)
    if len(y) == 0:
        return 0.0
    return float(np.bincount(y, minlength=2).max() / len(y))


__all__ = [
    "LABELS",
    "NEGATIVE",
    "POSITIVE",
    "classification_metrics",
    "fit_temperature",
    "majority_accuracy",
    "model_metrics",
]

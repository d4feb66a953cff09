"""The baseline every fine-tuned model is compared with: TF-IDF + logistic regression.

Fitted on the same train split, its regularisation picked on the same validation split the
model's checkpoint is picked on, evaluated on the same test split. A transformer that does not
beat it by a clear margin is not worth its serving cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer.metrics import classification_metrics

# A short grid, so the baseline gets the same benefit of validation-based selection as the model.
C_GRID = (0.5, 1.0, 2.0, 4.0, 8.0)
DESCRIPTION = (
    "TF-IDF (word 1-2-grams + char_wb 2-5-grams, sublinear tf) + "
    "LogisticRegression(class_weight='balanced'), C picked on validation macro-F1"
)


@dataclass
class BaselineResult:
    metrics: dict[str, Any]
    test_probs: np.ndarray
    c: float
    val_macro_f1: float


def _pipeline(c: float, seed: int, min_df: int) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, Pipeline

    # Character n-grams catch what word n-grams split badly in crypto chatter: elongations
    # ("mooooon"), glued tickers and emoji names, misspellings.
    features = FeatureUnion(
        [
            ("word", TfidfVectorizer(ngram_range=(1, 2), min_df=min_df, sublinear_tf=True)),
            (
                "char",
                TfidfVectorizer(
                    analyzer="char_wb", ngram_range=(2, 5), min_df=min_df, sublinear_tf=True
                ),
            ),
        ]
    )
    classifier = LogisticRegression(
        C=c, class_weight="balanced", max_iter=2000, solver="liblinear", random_state=seed
    )
    return Pipeline([("tfidf", features), ("lr", classifier)])


def run_baseline(
    train: Sequence[tuple[str, int]],
    val: Sequence[tuple[str, int]],
    test: Sequence[tuple[str, int]],
    *,
    seed: int = 42,
) -> BaselineResult:
    from sklearn.metrics import f1_score

    x_train = [t for t, _ in train]
    y_train = np.array([y for _, y in train], dtype=np.int64)
    x_val = [t for t, _ in val]
    y_val = np.array([y for _, y in val], dtype=np.int64)
    # Dropping n-grams seen once removes noise on real data but can empty the vocabulary of a
    # tiny training set.
    min_df = 2 if len(train) >= 500 else 1
    best: tuple[float, float] | None = None
    for c in C_GRID:
        model = _pipeline(c, seed, min_df).fit(x_train, y_train)
        score = float(f1_score(y_val, model.predict(x_val), average="macro", zero_division=0))
        # Strictly better only: ties keep the smaller C (the simpler model).
        if best is None or score > best[1]:
            best = (c, score)
    assert best is not None
    c, val_f1 = best
    model = _pipeline(c, seed, min_df).fit(x_train, y_train)
    y_test = np.array([y for _, y in test], dtype=np.int64)
    probs = np.asarray(model.predict_proba([t for t, _ in test]), dtype=np.float64)
    metrics = classification_metrics(y_test, probs)
    metrics["description"] = DESCRIPTION
    metrics["C"] = c
    metrics["val_macro_f1"] = round(val_f1, 6)
    return BaselineResult(metrics=metrics, test_probs=probs, c=c, val_macro_f1=val_f1)

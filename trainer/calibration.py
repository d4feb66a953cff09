"""Calibration: expected calibration error, reliability bins and temperature scaling.

Pure numpy so that the numbers are deterministic and testable without a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_BINS = 15
# Bounds for the fitted temperature. Below 0.05 or above 20 a model is either perfectly
# separable on validation (NLL keeps falling as T -> 0) or carries no signal; clamping keeps a
# degenerate validation split from producing an absurd serving temperature.
T_MIN = 0.05
T_MAX = 20.0


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    confidence: float
    accuracy: float


def _check(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).ravel()
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"probs must be (n, k) with n == len(labels); got {p.shape}, {y.shape}")
    return p, y


def _bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    # Bins are right-closed, (lo, hi], so a confidence of exactly 1.0 lands in the last bin and
    # one of exactly i/n_bins in bin i-1; 0 (impossible for a max-prob) goes to the first.
    idx = np.ceil(confidence * n_bins).astype(np.int64) - 1
    out: np.ndarray = np.clip(idx, 0, n_bins - 1)
    return out


def reliability_bins(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS
) -> list[ReliabilityBin]:
    """Equal-width bins on the max-probability (confidence) of each prediction."""
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    p, y = _check(probs, labels)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    idx = _bin_index(confidence, n_bins)
    bins: list[ReliabilityBin] = []
    for b in range(n_bins):
        mask = idx == b
        count = int(mask.sum())
        bins.append(
            ReliabilityBin(
                lower=b / n_bins,
                upper=(b + 1) / n_bins,
                count=count,
                confidence=float(confidence[mask].mean()) if count else 0.0,
                accuracy=float(correct[mask].mean()) if count else 0.0,
            )
        )
    return bins


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS
) -> float:
    """ECE = sum over bins of (bin share) * |accuracy - mean confidence|."""
    p, _ = _check(probs, labels)
    n = p.shape[0]
    if n == 0:
        return 0.0
    return float(
        sum(
            b.count / n * abs(b.accuracy - b.confidence)
            for b in reliability_bins(probs, labels, n_bins)
        )
    )


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    out: np.ndarray = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return out


def negative_log_likelihood(
    logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0
) -> float:
    """Mean NLL of softmax(logits / T)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).ravel()
    if z.shape[0] == 0:
        return 0.0
    logp = _log_softmax(z / temperature)
    return float(-logp[np.arange(len(y)), y].mean())


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, *, t_min: float = T_MIN, t_max: float = T_MAX
) -> float:
    """The single scalar T > 0 minimising validation NLL of softmax(logits / T).

    NLL is convex in 1/T, hence unimodal in log T, so scipy's bounded (Brent) search over log T
    finds the minimum without gradients, starting points or randomness: same logits, same T.
    """
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).ravel()
    if z.shape[0] == 0 or not np.isfinite(z).all():
        return 1.0

    def f(log_t: float) -> float:
        return negative_log_likelihood(z, y, math.exp(log_t))

    lo, hi = math.log(t_min), math.log(t_max)
    # xatol 1e-6 in log T is a relative error of 1e-6 in T, far below what ECE can see.
    result = minimize_scalar(f, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    best = float(result.x)
    # Keep T = 1 when scaling does not help at all (e.g. constant logits): no change is better
    # than an arbitrary one.
    if f(best) >= f(0.0) - 1e-12:
        return 1.0
    return float(math.exp(best))

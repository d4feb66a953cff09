"""ECE, reliability bins and temperature scaling on synthetic data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from stream.core.planning import softmax
from trainer.calibration import (
    T_MAX,
    T_MIN,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
)


def _sampled(logits: np.ndarray, seed: int = 0) -> np.ndarray:
    """Labels drawn from softmax(logits): those probabilities are calibrated by construction."""
    rng = np.random.default_rng(seed)
    p_pos = softmax(logits)[:, 1]
    return (rng.random(len(p_pos)) < p_pos).astype(np.int64)


def _true_logits(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    margin = rng.normal(0.0, 2.0, size=n)
    return np.stack([-margin / 2, margin / 2], axis=1)


def test_ece_of_calibrated_probabilities_is_near_zero() -> None:
    logits = _true_logits(200_000)
    labels = _sampled(logits)
    assert expected_calibration_error(softmax(logits), labels) < 0.005


def test_ece_matches_a_hand_computed_example() -> None:
    # Four predictions at confidence 0.9 (3 right) and two at 0.6 (both right):
    # ECE = 4/6 * |0.75 - 0.9| + 2/6 * |1.0 - 0.6| = 0.1 + 0.1333...
    probs = np.array([[0.1, 0.9]] * 4 + [[0.6, 0.4]] * 2)
    labels = np.array([1, 1, 1, 0, 0, 0])
    assert expected_calibration_error(probs, labels) == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.4)


def test_always_right_with_full_confidence_has_zero_ece() -> None:
    probs = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert expected_calibration_error(probs, np.array([1, 0])) == 0.0


def test_reliability_bins_are_right_closed_and_cover_every_row() -> None:
    probs = np.array([[0.0, 1.0], [1 / 3, 2 / 3], [0.5, 0.5], [0.2, 0.8]])
    bins = reliability_bins(probs, np.array([1, 1, 0, 0]), n_bins=15)
    assert len(bins) == 15
    assert sum(b.count for b in bins) == 4
    assert bins[-1].count == 1  # confidence 1.0 lands in the last bin, not past it
    assert bins[9].count == 1  # 2/3 = 10/15 is the upper edge of bin 9
    assert bins[7].count == 1  # 0.5 is in (7/15, 8/15]
    assert bins[11].count == 1
    assert bins[11].accuracy == 0.0


def test_ece_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="probs must be"):
        expected_calibration_error(np.zeros((3, 2)), np.zeros(2))


def test_empty_input_has_zero_ece_and_unit_temperature() -> None:
    assert expected_calibration_error(np.zeros((0, 2)), np.zeros(0)) == 0.0
    assert fit_temperature(np.zeros((0, 2)), np.zeros(0)) == 1.0


@pytest.mark.parametrize("scale", [3.0, 0.4])
def test_temperature_recovers_the_miscalibration_factor(scale: float) -> None:
    logits = _true_logits(50_000)
    labels = _sampled(logits)
    miscalibrated = logits * scale  # scale > 1: over-confident; < 1: under-confident
    t = fit_temperature(miscalibrated, labels)
    assert t == pytest.approx(scale, rel=0.05)
    assert negative_log_likelihood(miscalibrated, labels, t) < negative_log_likelihood(
        miscalibrated, labels, 1.0
    )
    before = expected_calibration_error(softmax(miscalibrated), labels)
    after = expected_calibration_error(softmax(miscalibrated, t), labels)
    assert after < before
    assert after < 0.01


def test_over_confident_logits_get_t_above_one() -> None:
    logits = _true_logits(5_000, seed=3)
    labels = _sampled(logits, seed=4)
    assert fit_temperature(logits * 5, labels) > 1.0


def test_temperature_fit_is_deterministic() -> None:
    logits = _true_logits(2_000) * 2
    labels = _sampled(logits)
    assert fit_temperature(logits, labels) == fit_temperature(logits.copy(), labels.copy())


def test_uninformative_logits_keep_unit_temperature() -> None:
    logits = np.zeros((100, 2))
    labels = np.array([0, 1] * 50)
    assert fit_temperature(logits, labels) == 1.0


def test_separable_data_is_clamped() -> None:
    logits = np.array([[-1.0, 1.0], [1.0, -1.0]] * 10)
    labels = np.array([1, 0] * 10)
    t = fit_temperature(logits, labels)
    assert T_MIN <= t < 0.06
    assert fit_temperature(-logits, labels) == pytest.approx(T_MAX, rel=1e-3)


def test_nll_matches_the_definition() -> None:
    logits = np.array([[0.0, np.log(3.0)]])
    assert negative_log_likelihood(logits, np.array([1])) == pytest.approx(-np.log(0.75))

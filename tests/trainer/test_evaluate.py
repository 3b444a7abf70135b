"""Metric helpers on arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.evaluate import calibration_bins, metrics, top_decile_lift


def test_top_decile_lift_of_a_perfect_ranking() -> None:
    y = np.array([1] * 10 + [0] * 90)
    p = np.linspace(1, 0, 100)
    assert top_decile_lift(y, p) == pytest.approx(10.0)
    assert top_decile_lift(y, p[::-1]) == pytest.approx(0.0)


def test_calibration_bins_count_every_row_once() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(1000)
    y = (rng.random(1000) < p).astype(int)
    bins = calibration_bins(y, p)
    assert len(bins) == 10 and sum(b["rows"] for b in bins) == 1000
    for b in bins:
        assert b["lower"] <= b["mean_predicted"] <= b["upper"]  # type: ignore[operator]
    assert calibration_bins(np.array([1]), np.array([1.0]))[-1]["rows"] == 1  # p = 1 goes to the last bin


def test_metrics_are_json_safe_and_sensible() -> None:
    y = np.array([0, 0, 1, 1])
    m = metrics(y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert m["roc_auc"] == 1.0 and m["pr_auc"] == 1.0
    assert m["brier"] == pytest.approx((0.01 + 0.04 + 0.04 + 0.01) / 4)
    assert all(b["mean_predicted"] is None for b in m["calibration"] if b["rows"] == 0)

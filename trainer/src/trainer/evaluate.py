"""Holdout metrics, the same for candidate, baseline and champion, so that they can be compared.

Every figure is computed from probabilities of the churn class on the temporal holdout: ROC AUC
(ranking, what the gate uses), PR AUC (ranking under imbalance), Brier and log loss (probability
quality), calibration bins, and lift in the top decile (what a retention campaign gets).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, precision_recall_curve, roc_auc_score, roc_curve

from trainer.config import CALIBRATION_BINS


def calibration_bins(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict[str, float | int | None]]:
    """Equal-width probability bins: rows, mean predicted probability and observed churn rate per bin."""
    index = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    predicted = np.bincount(index, weights=p, minlength=bins)
    observed = np.bincount(index, weights=y, minlength=bins)
    out: list[dict[str, float | int | None]] = []
    for b in range(bins):
        n = int(counts[b])
        out.append(
            {
                "lower": b / bins,
                "upper": (b + 1) / bins,
                "rows": n,
                "mean_predicted": float(predicted[b] / n) if n else None,  # JSON has no NaN
                "observed_rate": float(observed[b] / n) if n else None,
            }
        )
    return out


def top_decile_lift(y: np.ndarray, p: np.ndarray) -> float | None:
    """Churn rate among the 10% highest scores divided by the overall churn rate (ties broken by row order)."""
    k = max(1, int(np.ceil(len(p) * 0.1)))
    top = np.argsort(-p, kind="stable")[:k]
    base = float(np.mean(y))
    return float(np.mean(y[top]) / base) if base > 0 else None


def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """All holdout metrics for one model's churn probabilities."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    y = np.asarray(y, dtype=np.int64)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "top_decile_lift": top_decile_lift(y, p),
        "calibration": calibration_bins(y, p),
        "rows": len(y),
        "positive_rate": float(np.mean(y)),
    }


def _thin(*arrays: np.ndarray, points: int) -> tuple[np.ndarray, ...]:
    """At most `points` evenly spaced points of a curve (first and last kept): a plot cannot show more."""
    n = len(arrays[0])
    if n <= points:
        return arrays
    keep = np.unique(np.linspace(0, n - 1, points).round().astype(np.int64))
    return tuple(a[keep] for a in arrays)


def curves(y: np.ndarray, p: np.ndarray, points: int = 2000) -> dict[str, np.ndarray]:
    """ROC and precision-recall curves, thinned to `points` points each, for the report's plots."""
    fpr, tpr, _ = roc_curve(y, p)
    precision, recall, _ = precision_recall_curve(y, p)
    fpr, tpr = _thin(fpr, tpr, points=points)
    precision, recall = _thin(precision, recall, points=points)
    return {"fpr": fpr, "tpr": tpr, "precision": precision, "recall": recall}


def permutation_importance(
    score: Callable[[dict[str, np.ndarray]], np.ndarray],
    feeds: dict[str, np.ndarray],
    y: np.ndarray,
    seed: int,
    repeats: int,
    sample: int,
) -> dict[str, dict[str, float]]:
    """Mean and spread of the ROC AUC drop when one feature's values are shuffled (on a seeded row sample).

    Runs on the exported model's own scoring function, so it describes the artifact that is deployed.
    """
    rng = np.random.default_rng(seed)
    n = len(y)
    rows = np.sort(rng.choice(n, size=sample, replace=False)) if n > sample else np.arange(n)
    base_feeds = {k: v[rows] for k, v in feeds.items()}
    y_sample = y[rows]
    if len(np.unique(y_sample)) < 2:
        return {name: {"mean": 0.0, "std": 0.0} for name in feeds}
    reference = roc_auc_score(y_sample, score(base_feeds))
    result: dict[str, dict[str, float]] = {}
    for name in feeds:
        drops = []
        for _ in range(repeats):
            shuffled = dict(base_feeds)
            shuffled[name] = base_feeds[name][rng.permutation(len(rows))]
            drops.append(reference - roc_auc_score(y_sample, score(shuffled)))
        result[name] = {"mean": float(np.mean(drops)), "std": float(np.std(drops))}
    return result

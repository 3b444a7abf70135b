"""Score statistics of one prediction batch in bounded memory: quantiles and PSI.

Scores are probabilities in [0, 1]. Instead of keeping every score (memory growing with the number
of customers), the batch keeps a fixed 100 000-bin histogram (quantiles to 1e-5) plus exact count,
min, max and mean, and the counts per bin of the model's `score_reference` deciles for the PSI.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

QUANTILES = (0.01, 0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99)
_RESOLUTION = 100_000
_EPSILON = 1e-4  # floor for empty bins, so that ln(a / e) stays finite


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of `actual` proportions against `expected` ones."""
    e = np.clip(np.asarray(expected, dtype=np.float64), _EPSILON, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), _EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


def reference_is_valid(reference: Any) -> bool:
    """The registry contract: 11 ascending bin edges and 10 proportions summing to ~1."""
    try:
        edges = np.asarray(reference["bin_edges"], dtype=np.float64)
        proportions = np.asarray(reference["proportions"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        return False
    return (
        edges.shape == (11,)
        and proportions.shape == (10,)
        and bool(np.all(np.diff(edges) >= 0))
        and bool(np.all(proportions >= 0))
        and abs(float(proportions.sum()) - 1.0) < 1e-3
    )


class ScoreStats:
    """Accumulates a batch's scores chunk by chunk; memory is constant in the number of rows."""

    def __init__(self, reference: dict[str, Any] | None) -> None:
        self.count = 0
        self.total = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf
        self._histogram = np.zeros(_RESOLUTION, dtype=np.int64)
        self._reference = reference if reference is not None and reference_is_valid(reference) else None
        self._psi_counts = np.zeros(10, dtype=np.int64)

    @property
    def has_reference(self) -> bool:
        return self._reference is not None

    def update(self, scores: np.ndarray) -> None:
        if scores.size == 0:
            return
        s = scores.astype(np.float64)
        self.count += int(s.size)
        self.total += float(s.sum())
        self.minimum = min(self.minimum, float(s.min()))
        self.maximum = max(self.maximum, float(s.max()))
        bins = np.clip((s * _RESOLUTION).astype(np.int64), 0, _RESOLUTION - 1)
        self._histogram += np.bincount(bins, minlength=_RESOLUTION)
        if self._reference is not None:
            # scores outside the training range fall into the first or last decile bin
            inner = np.asarray(self._reference["bin_edges"], dtype=np.float64)[1:-1]
            self._psi_counts += np.bincount(np.searchsorted(inner, s, side="right"), minlength=10)

    def quantiles(self) -> dict[str, float]:
        """min, p01..p99, max and mean, rounded to the histogram's resolution (empty batch: {})."""
        if self.count == 0:
            return {}
        cumulative = np.cumsum(self._histogram)
        out: dict[str, float] = {"min": round(self.minimum, 6)}
        for q in QUANTILES:
            index = int(np.searchsorted(cumulative, q * self.count, side="left"))
            value = (index + 0.5) / _RESOLUTION
            out[f"p{round(q * 100):02d}"] = round(min(max(value, self.minimum), self.maximum), 6)
        out["max"] = round(self.maximum, 6)
        out["mean"] = round(self.total / self.count, 6)
        return out

    def psi(self) -> float | None:
        """PSI of this batch against the training score deciles; None when it cannot be computed."""
        if self._reference is None or self.count == 0:
            return None
        return psi(np.asarray(self._reference["proportions"]), self._psi_counts / self.count)

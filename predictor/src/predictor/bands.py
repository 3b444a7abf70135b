"""Risk bands: what the retention team acts on, derived from the churn probability alone.

    low     probability <  0.30
    medium  0.30 <= probability < 0.60
    high    probability >= 0.60

The thresholds live here only; the band is computed once, at scoring time, from the model's own
float32 output, and stored with the probability so that readers never re-derive it.
"""

from __future__ import annotations

import numpy as np

BANDS: tuple[str, ...] = ("low", "medium", "high")
THRESHOLDS: tuple[float, ...] = (0.30, 0.60)  # lower bounds of medium and high


def band_codes(probabilities: np.ndarray) -> np.ndarray:
    """Index into BANDS for each probability (int8, vectorised)."""
    return np.searchsorted(np.asarray(THRESHOLDS, dtype=np.float64), probabilities.astype(np.float64), side="right").astype(np.int8)

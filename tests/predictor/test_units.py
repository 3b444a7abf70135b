"""Pure functions of the predictor: shards, risk bands, PSI and quantiles."""

from __future__ import annotations

import numpy as np
import pytest

from mlp_common.exit_codes import ExitCode, StageError
from predictor.bands import band_codes
from predictor.drift import ScoreStats, psi, reference_is_valid
from predictor.predict import Shard


def test_shard_parse() -> None:
    assert Shard.parse("2/4") == Shard(2, 4)
    assert Shard.parse("0/1") == Shard()
    for bad in ("4/4", "-1/4", "x", "1/0", "1/2/3"):
        with pytest.raises(StageError) as err:
            Shard.parse(bad)
        assert err.value.code == ExitCode.BAD_ARGUMENT


def test_band_thresholds() -> None:
    p = np.array([0.0, 0.2999, 0.3, 0.5999, 0.6, 1.0], dtype=np.float32)
    assert band_codes(p).tolist() == [0, 0, 1, 1, 2, 2]


def _reference(scores: np.ndarray) -> dict:
    edges = np.quantile(scores, np.linspace(0, 1, 11))
    counts = np.bincount(np.searchsorted(edges[1:-1], scores, side="right"), minlength=10)
    return {"bin_edges": edges.tolist(), "proportions": (counts / len(scores)).tolist()}


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    reference = _reference(rng.beta(2, 5, 50_000))
    same, shifted = ScoreStats(reference), ScoreStats(reference)
    for chunk in np.array_split(rng.beta(2, 5, 40_000), 7):  # chunking must not matter
        same.update(chunk)
    shifted.update(rng.beta(5, 2, 40_000))
    same_psi, shifted_psi = same.psi(), shifted.psi()
    assert same_psi is not None and same_psi < 0.01
    assert shifted_psi is not None and shifted_psi > 1.0
    assert psi(np.full(10, 0.1), np.full(10, 0.1)) == 0.0


def test_quantiles_within_resolution_and_empty_batch() -> None:
    rng = np.random.default_rng(1)
    scores = rng.random(100_001)
    stats = ScoreStats(None)
    for chunk in np.array_split(scores, 10):
        stats.update(chunk)
    q = stats.quantiles()
    for name, level in (("p01", 0.01), ("p50", 0.5), ("p99", 0.99)):
        assert q[name] == pytest.approx(np.quantile(scores, level), abs=2e-5)
    assert q["min"] == pytest.approx(scores.min(), abs=1e-6) and q["max"] == pytest.approx(scores.max(), abs=1e-6)
    assert stats.psi() is None
    assert ScoreStats(None).quantiles() == {}


def test_reference_validation() -> None:
    assert reference_is_valid({"bin_edges": list(np.linspace(0, 1, 11)), "proportions": [0.1] * 10})
    assert not reference_is_valid({"bin_edges": [0, 1], "proportions": [1.0]})
    assert not reference_is_valid({})
    assert not reference_is_valid({"bin_edges": list(np.linspace(1, 0, 11)), "proportions": [0.1] * 10})

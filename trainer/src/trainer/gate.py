"""The champion/challenger gate: a worse model never replaces a better one.

The candidate must (1) reach the AUC floor and (2) not be worse than the current champion by more
than the tolerance, where the champion is re-scored now, from its verified ONNX artifact, on the
SAME holdout rows: metrics stored at the champion's own training time are not comparable. The
switch itself is `registry.promote(compared_with=...)`, a compare-and-swap in one transaction, so
two concurrent trainers cannot both win and there is never zero or two champions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg

from mlp_common import registry
from trainer.data import TrainingData
from trainer.evaluate import metrics
from trainer.train import OnnxModel


@dataclass
class ChampionScore:
    version: int
    metrics: dict[str, Any] | None  # None when it cannot score the current feature set
    scores: np.ndarray | None
    note: str | None = None


def rescore_champion(conn: psycopg.Connection, champion: registry.ModelVersion, holdout: TrainingData) -> ChampionScore:
    """Load the champion's artifact (sha256-verified; a mismatch raises ARTIFACT_INTEGRITY) and score the holdout."""
    artifact = registry.load_artifact(conn, champion)
    kinds = {f.name: f.kind for f in holdout.features}
    incompatible = [f["name"] for f in champion.features if kinds.get(f["name"]) != f["type"]]
    if incompatible:
        return ChampionScore(
            champion.version,
            None,
            None,
            f"champion v{champion.version} cannot score the current training set (feature(s) "
            f"{', '.join(incompatible)} missing or of another type)",
        )
    model = OnnxModel(artifact, champion.features)
    scores = model.score(holdout)
    return ChampionScore(champion.version, metrics(holdout.labels, scores), scores)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(candidate_auc: float, floor: float, tolerance: float, champion: ChampionScore | None) -> Decision:
    """Whether the candidate should become champion, and why, in words a reader of the result understands."""
    if candidate_auc < floor:
        return Decision(False, f"holdout ROC AUC {candidate_auc:.4f} is below the floor {floor:.4f}")
    if champion is None:
        return Decision(True, f"no champion yet and holdout ROC AUC {candidate_auc:.4f} clears the floor {floor:.4f}")
    if champion.metrics is None:
        return Decision(True, f"{champion.note}; candidate clears the floor {floor:.4f} with ROC AUC {candidate_auc:.4f}")
    champion_auc = float(champion.metrics["roc_auc"])
    if candidate_auc >= champion_auc - tolerance:
        return Decision(
            True,
            f"holdout ROC AUC {candidate_auc:.4f} clears the floor {floor:.4f} and is not worse than champion v{champion.version}'s "
            f"{champion_auc:.4f} re-scored on the same holdout (tolerance {tolerance:.4f})",
        )
    return Decision(
        False,
        f"holdout ROC AUC {candidate_auc:.4f} is worse than champion v{champion.version}'s {champion_auc:.4f} on "
        f"the same holdout by more than the tolerance {tolerance:.4f}",
    )


def apply(conn: psycopg.Connection, version: int, decision: Decision, champion_version: int | None, model_name: str) -> tuple[bool, str]:
    """Carry out the decision in the registry; returns (promoted, reason). Losing a promotion race is "not promoted"."""
    if champion_version == version:
        return True, f"version {version} is already the champion (same data, same model: a re-run)"
    if not decision.promote:
        registry.record_rejection(conn, version, decision.reason, model_name=model_name)
        return False, decision.reason
    won = registry.promote(conn, version, compared_with=champion_version, reason=decision.reason, model_name=model_name)
    if not won:
        return (
            False,
            f"the champion changed (was v{champion_version}) while this candidate was being evaluated; not "
            f"promoted, re-run to compare with the new champion",
        )
    return True, decision.reason

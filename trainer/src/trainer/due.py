"""`trainer due`: should today's run train a new model?

Due when there is no champion, when the champion's data is `cadence_days` or more older than D, or
when the latest prediction batch before D (scored by the current champion) flagged drift. Batches
scored by an older model do not count: their drift was measured against that model's reference,
and a retrain has already happened since.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg

from mlp_common import registry
from mlp_common.exit_codes import ExitCode, StageError


def _exists(conn: psycopg.Connection, relation: str) -> bool:
    row = conn.execute("select to_regclass(%s) is not null", (relation,)).fetchone()
    return bool(row and row[0])


def latest_drift(conn: psycopg.Connection, ds: date, champion_version: int) -> tuple[date, bool] | None:
    """(as_of_date, any shard drifted) of the latest batch before D scored by the champion, or None."""
    if not _exists(conn, "ml.prediction_batches"):
        return None
    row = conn.execute(
        """
        select as_of_date, coalesce(bool_or(drift), false)
        from ml.prediction_batches
        where as_of_date = (
            select max(as_of_date) from ml.prediction_batches where as_of_date < %s and model_version = %s
        ) and model_version = %s
        group by as_of_date
        """,
        (ds, champion_version, champion_version),
    ).fetchone()
    return None if row is None else (row[0], bool(row[1]))


def is_due(conn: psycopg.Connection, ds: date, cadence_days: int, model_name: str = registry.DEFAULT_MODEL) -> dict[str, Any]:
    """The result JSON of `trainer due`: {"due": bool, "reason": str, ...}."""
    if cadence_days < 1:
        raise StageError(f"--cadence-days must be at least 1, got {cadence_days}", ExitCode.BAD_ARGUMENT)
    champion = registry.champion(conn, model_name) if _exists(conn, "ml.model_champion") else None
    if champion is None:
        return {"due": True, "reason": f"no champion for model '{model_name}' yet", "champion_version": None}
    age = (ds - champion.as_of_date).days
    base = {"champion_version": champion.version, "champion_as_of_date": str(champion.as_of_date), "champion_age_days": age}
    if age >= cadence_days:
        return {
            "due": True,
            "reason": f"champion v{champion.version} was trained as of {champion.as_of_date}, {age} days before "
            "{ds} (cadence {cadence_days} days)",
            **base,
        }
    drift = latest_drift(conn, ds, champion.version)
    if drift is not None and drift[1]:
        return {"due": True, "reason": f"the prediction batch of {drift[0]} (champion v{champion.version}) flagged score drift", **base}
    checked = f"; latest batch ({drift[0]}) showed no drift" if drift else "; no prediction batch by the champion before D"
    return {"due": False, "reason": f"champion v{champion.version} is {age} days old (cadence {cadence_days} days){checked}", **base}

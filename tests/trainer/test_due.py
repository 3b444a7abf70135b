"""`trainer due`: no champion, an old champion, or drift in the champion's latest batch make training due."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import psycopg
import pytest

from mlp_common import registry
from mlp_common.exit_codes import ExitCode
from tests.trainer.trainer_helpers import run_cli
from trainer.due import is_due

pytestmark = pytest.mark.integration

BATCHES_DDL = """
create table ml.prediction_batches (batch_id uuid, as_of_date date, model_version bigint, shard int, shard_count int,
    rows bigint, quantiles jsonb, psi double precision, drift boolean, created_at timestamptz default now())
"""


def _champion(db: psycopg.Connection, as_of: date) -> int:
    registry.ensure_schema(db)
    version = registry.register(
        db,
        registry.NewVersion(
            as_of_date=as_of,
            data_window={},
            row_counts={},
            class_balance={},
            features=[{"name": "recency_days", "type": "numeric"}],
            metrics={},
            score_reference={},
            code_version="test",
            artifact=b"not loaded by due",
        ),
    )
    assert registry.promote(db, version, compared_with=registry.champion(db) and registry.champion(db).version, reason="test")  # type: ignore[union-attr]
    return version


def _batch(db: psycopg.Connection, as_of: str, version: int, drift: bool, shard: int = 0) -> None:
    db.execute(
        "insert into ml.prediction_batches (batch_id, as_of_date, model_version, shard, shard_count, rows, psi, drift)"
        " values (gen_random_uuid(), %s, %s, %s, 2, 10, 0.1, %s)",
        (as_of, version, shard, drift),
    )


def test_due_without_champion_and_without_registry(db: psycopg.Connection) -> None:
    result = is_due(db, date(2024, 6, 1), 7)
    assert result["due"] is True and "no champion" in result["reason"]


def test_due_by_champion_age(db: psycopg.Connection) -> None:
    _champion(db, date(2024, 5, 25))
    assert is_due(db, date(2024, 6, 1), 7)["due"] is True  # exactly 7 days
    fresh = is_due(db, date(2024, 5, 31), 7)
    assert fresh["due"] is False and "no prediction batch" in fresh["reason"]


def test_due_by_drift_of_the_champions_latest_batch(db: psycopg.Connection) -> None:
    old = _champion(db, date(2024, 5, 20))
    version = _champion(db, date(2024, 5, 28))
    db.execute(BATCHES_DDL)
    _batch(db, "2024-05-27", old, True)  # drift seen by the previous model: already retrained since
    assert is_due(db, date(2024, 5, 31), 7)["due"] is False
    _batch(db, "2024-05-29", version, True, shard=1)
    _batch(db, "2024-05-29", version, False, shard=0)
    _batch(db, "2024-05-30", version, False)
    assert is_due(db, date(2024, 5, 31), 7)["due"] is False  # latest batch before D has no drift
    _batch(db, "2024-05-31", version, True)  # on D itself: not "before D"
    assert is_due(db, date(2024, 5, 31), 7)["due"] is False
    result = is_due(db, date(2024, 6, 1), 7)
    assert result["due"] is True and "drift" in result["reason"]


def test_due_cli_writes_the_result(db: psycopg.Connection, tmp_path: Path) -> None:
    run = run_cli("due", "--ds", "2024-06-01", "--cadence-days", "7", tmp_path=tmp_path)
    assert run.code == 0, run.stderr
    assert run.result is not None and run.result["due"] is True and run.result["reason"]
    bad = run_cli("due", "--ds", "2024-06-01", "--cadence-days", "0", tmp_path=tmp_path)
    assert bad.code == ExitCode.BAD_ARGUMENT and "--cadence-days" in bad.stderr

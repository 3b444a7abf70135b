"""Reliability and security of scoring (issue 10): a tampered artifact is refused and the previous
champion keeps serving; hostile column names stay identifiers; a warehouse restart mid-run is a
clean, retryable failure (exit 50) and the retry completes.

The SIGKILL-mid-write case of the predictor is `test_predict.py::test_sigkill_mid_write_leaves_previous_state_intact`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from mlp_common import registry
from mlp_common.exit_codes import ExitCode, StageError
from tests.faults import failed_cleanly_and_retryably, restart_warehouse_under
from tests.predictor.onnx_model import DEFAULT_COLUMNS, FEATURES_TABLE, create_features_mart, fill_features, register_model

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

D = date(2025, 3, 1)
HOSTILE = 'we"ird; drop table x;--'


def predict_cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], dict | None]:
    result_path = tmp_path / f"result-{time.monotonic_ns()}.json"
    proc = subprocess.run(
        [sys.executable, "-m", "predictor.cli", "predict", "--ds", D.isoformat(), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {}), "PIPELINE_RESULT_PATH": str(result_path)},
        timeout=300,
    )
    return proc, json.loads(result_path.read_text()) if result_path.exists() else None


def predictions(db: psycopg.Connection) -> list[tuple]:
    return db.execute("select customer_id, model_version, churn_probability from ml.churn_predictions order by 1").fetchall()


def tamper(db: psycopg.Connection, version: int) -> None:
    """Flip one byte of a stored artifact, leaving its recorded sha256 as it was."""
    flip = "update ml.model_versions set artifact = overlay(artifact placing '\\xff'::bytea from 100 for 1) where version = %s"
    db.execute(flip, [version])


def test_reliability_tampered_candidate_is_never_promoted_and_the_champion_keeps_serving(db, tmp_path, reliability) -> None:
    create_features_mart(db)
    fill_features(db, D, 500)
    champion = register_model(db)
    candidate = register_model(db, promote=False, seed=99)
    tamper(db, candidate.version)
    with pytest.raises(StageError) as refused:
        registry.promote(db, candidate.version, compared_with=champion.version, reason="test")
    reliability.fault(survived=refused.value.code == ExitCode.ARTIFACT_INTEGRITY)
    assert refused.value.code == ExitCode.ARTIFACT_INTEGRITY and "refusing to promote" in str(refused.value)
    current = registry.champion(db)
    assert current is not None and current.version == champion.version
    proc, result = predict_cli(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert result is not None and result["model_version"] == champion.version and result["rows"] == 500


def test_reliability_tampered_champion_is_refused_before_any_write(db, tmp_path, reliability) -> None:
    """The champion's own artifact tampered with: the predictor refuses it (exit 44, one line, not
    retried), D's previous scores stay as they were, and pinning the previous version serves."""
    create_features_mart(db)
    fill_features(db, D, 500)
    previous = register_model(db)
    proc, _ = predict_cli(tmp_path)
    assert proc.returncode == 0, proc.stderr
    newer = register_model(db, seed=99)
    proc, _ = predict_cli(tmp_path)
    assert proc.returncode == 0, proc.stderr
    before = predictions(db)
    assert {r[1] for r in before} == {newer.version}
    tamper(db, newer.version)
    proc, _ = predict_cli(tmp_path)
    reliability.fault(survived=proc.returncode == ExitCode.ARTIFACT_INTEGRITY)
    assert proc.returncode == ExitCode.ARTIFACT_INTEGRITY, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "integrity" in proc.stderr and "Traceback" not in proc.stderr
    assert predictions(db) == before
    proc, result = predict_cli(tmp_path, "--model-version", str(previous.version))  # the operator's way out (docs/operations.md)
    assert proc.returncode == 0, proc.stderr
    assert result is not None and result["model_version"] == previous.version


def test_reliability_hostile_feature_names_stay_identifiers(db, tmp_path, reliability) -> None:
    """A feature column (so a registry feature name) that is an SQL injection attempt. The scoring
    query quotes it as an identifier: it reads the right values and drops nothing. The stage as a
    whole refuses such a model with one line (exit 44): ONNX input names cannot carry it
    (skl2onnx rewrites them), so the artifact breaks the input convention before any query runs."""
    from mlp_common.features import table_columns
    from predictor import pgcopy
    from predictor.features import feature_columns
    from predictor.predict import Shard, _select, decode_features

    db.execute("create table x (id int)")
    columns = {HOSTILE: "double precision", **{k: v for k, v in DEFAULT_COLUMNS.items() if k != "spend_90d"}}
    create_features_mart(db, columns)
    db.execute(
        sql.SQL("insert into {} (as_of_date, customer_id, {}, region, account_type) select %s, 'c' || g, g * 1.5, 'north', 'basic'").format(
            sql.SQL(FEATURES_TABLE), sql.Identifier(HOSTILE)
        )
        + sql.SQL(" from generate_series(1, 50) as g"),
        (D,),
    )
    model = register_model(db, columns=columns)
    reliability.bad_inputs += 2
    mart = feature_columns(db)
    assert mart is not None and HOSTILE in [c.name for c in mart]
    with db.cursor() as cur, cur.copy(_select(D, mart, model.features, Shard())) as copy:
        blocks = [decode_features(block, mart, model.features)[1] for block in pgcopy.read_blocks(copy, 1 << 20)]
    assert sorted(v for block in blocks for v in block[HOSTILE].tolist()) == [1.5 * g for g in range(1, 51)]
    # a hostile schema and table name: table_columns quotes both
    db.execute(sql.SQL("create schema {}").format(sql.Identifier(HOSTILE)))
    db.execute(sql.SQL("create table {} ({} int)").format(sql.Identifier(HOSTILE, HOSTILE), sql.Identifier(HOSTILE)))
    assert [c.name for c in table_columns(db, HOSTILE, HOSTILE) or []] == [HOSTILE]
    proc, _ = predict_cli(tmp_path)
    assert proc.returncode == ExitCode.ARTIFACT_INTEGRITY and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert db.execute("select to_regclass('public.x') is not null").fetchone() == (True,)


def test_reliability_warehouse_restart_mid_run_fails_cleanly_and_the_retry_succeeds(private_warehouse, tmp_path, reliability) -> None:
    """Restart the warehouse while the predictor streams its blocks: the run ends with exit 50 (the
    DAG retries it) and one stderr line, no partial batch is visible, and the retry completes."""
    with psycopg.connect("", autocommit=True) as db:
        create_features_mart(db)
        fill_features(db, D, 3000)
        register_model(db)
    proc = subprocess.Popen(
        [sys.executable, "-m", "predictor.cli", "predict", "--ds", D.isoformat(), "--chunk-bytes", "4096"],
        env={**os.environ, "PREDICTOR_CHUNK_DELAY_SECONDS": "0.2", "PIPELINE_RESULT_PATH": str(tmp_path / "r.json")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if '"chunk staged"' in line:
            break
    code, err = restart_warehouse_under(proc, private_warehouse)
    reliability.fault(survived=failed_cleanly_and_retryably(code, err))
    assert failed_cleanly_and_retryably(code, err), (code, err)
    with psycopg.connect("", autocommit=True) as db:
        exists = db.execute("select to_regclass('ml.churn_predictions') is not null").fetchone()
        assert exists == (False,) or db.execute("select count(*) from ml.churn_predictions").fetchone() == (0,)
        retry, result = predict_cli(tmp_path)
        assert retry.returncode == 0, retry.stderr
        assert result is not None and result["rows"] == 3000
        assert db.execute("select count(*), count(distinct customer_id) from ml.churn_predictions").fetchone() == (3000, 3000)

"""The predictor against a real PostgreSQL and a real skl2onnx model: idempotence, shards, crash safety, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import psycopg
import pytest

from predictor.predict import Shard, predict
from tests.predictor.onnx_model import DEFAULT_COLUMNS, create_features_mart, fill_features, register_model

pytestmark = pytest.mark.integration

D = date(2025, 3, 1)
ROWS_QUERY = "select as_of_date, customer_id, model_version, churn_probability, risk_band from ml.churn_predictions order by 1, 2"


def cli(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "predictor.cli", "predict", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        **kwargs,
    )


def rows(db: psycopg.Connection) -> list[tuple]:
    return db.execute(ROWS_QUERY).fetchall()


def batches(db: psycopg.Connection) -> list[tuple]:
    return db.execute(
        "select batch_id, as_of_date, model_version, shard, shard_count, rows, quantiles, psi, drift"
        " from ml.prediction_batches order by shard_count, shard"
    ).fetchall()


@pytest.fixture
def scored_world(db: psycopg.Connection) -> psycopg.Connection:
    """A features mart with 3 000 customers for D (some NULL features, an unseen region) and a champion."""
    create_features_mart(db)
    fill_features(db, D, 3000)
    fill_features(db, date(2025, 2, 1), 500)  # another snapshot: must never be scored for D
    register_model(db)
    return db


def test_predict_twice_gives_identical_rows(scored_world: psycopg.Connection) -> None:
    first = predict(D, Shard())
    before = rows(scored_world)
    second = predict(D, Shard(), chunk_bytes=4096)  # many small chunks: same rows as one big one
    after = rows(scored_world)
    assert first["rows"] == second["rows"] == 3000 == len(after)
    assert before == after
    assert second["replaced_rows"] == 3000
    assert {r[0] for r in after} == {D}
    assert sum(first["risk_bands"].values()) == 3000
    assert first["quantiles"] == second["quantiles"]
    assert all(0.0 <= r[3] <= 1.0 for r in after)
    (batch,) = batches(scored_world)  # the second run replaced the first's record
    assert str(batch[0]) == second["batch_id"]
    assert batch[5] == 3000 and batch[7] == second["psi"] and batch[8] is second["drift"]


def test_four_concurrent_shards_give_exactly_the_rows_of_one_run(scored_world: psycopg.Connection, tmp_path: Path) -> None:
    predict(D, Shard())
    whole = rows(scored_world)
    scored_world.execute("delete from ml.churn_predictions")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "predictor.cli", "predict", "--ds", D.isoformat(), "--shard", f"{i}/4"],
            env={**os.environ, "PIPELINE_RESULT_PATH": str(tmp_path / f"shard{i}.json")},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    results = [json.loads((tmp_path / f"shard{i}.json").read_text()) for i in range(4)]
    assert rows(scored_world) == whole
    assert all(r["rows"] > 0 for r in results)
    assert sum(r["rows"] for r in results) == 3000
    recorded = batches(scored_world)
    assert [(b[3], b[4]) for b in recorded] == [(0, 4), (1, 4), (2, 4), (3, 4)]  # the unsharded record was superseded
    # re-running one shard replaces only that shard's rows
    again = predict(D, Shard(2, 4))
    assert again["rows"] == again["replaced_rows"] == results[2]["rows"]
    assert rows(scored_world) == whole


@pytest.mark.reliability
def test_sigkill_mid_write_leaves_previous_state_intact(scored_world: psycopg.Connection, reliability) -> None:
    predict(D, Shard())
    before_rows, before_batches = rows(scored_world), batches(scored_world)
    newer = register_model(scored_world, seed=99)  # a completed re-run would change every row's version
    proc = subprocess.Popen(
        [sys.executable, "-m", "predictor.cli", "predict", "--ds", D.isoformat(), "--chunk-bytes", "4096"],
        env={**os.environ, "PREDICTOR_CHUNK_DELAY_SECONDS": "30"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # wait until the COPY into the staging table is under way
            if '"chunk staged"' in line:
                break
        else:
            pytest.fail(f"predictor ended before staging a chunk: {proc.stderr.read() if proc.stderr else ''}")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert rows(scored_world) == before_rows
    assert batches(scored_world) == before_batches
    reliability.fault()  # counted in the reliability totals (issue 10)
    # the server ends the dead session's transaction; a new run then completes normally
    deadline = time.monotonic() + 20
    while scored_world.execute("select count(*) from pg_stat_activity where application_name = 'predictor-writer'").fetchone() != (0,):
        assert time.monotonic() < deadline, "the killed writer's session never ended"
        time.sleep(0.2)
    result = predict(D, Shard())
    assert result["model_version"] == newer.version
    assert {r[2] for r in rows(scored_world)} == {newer.version}


def test_schema_mismatch_fails_before_any_write(db: psycopg.Connection) -> None:
    register_model(db)
    changed = {**DEFAULT_COLUMNS, "spend_90d": "text", "loyalty_points": "integer"}
    del changed["region"]
    create_features_mart(db, changed)
    db.execute("insert into marts.customer_churn_features (as_of_date, customer_id) values (%s, 'c1')", (D,))
    done = cli("--ds", D.isoformat())
    assert done.returncode == 43, done.stderr
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1 and message.startswith("predictor: error:")
    assert "missing column(s) region" in message and "loyalty_points" in message and "spend_90d is text" in message
    assert db.execute("select to_regclass('ml.churn_predictions'), to_regclass('ml.prediction_batches')").fetchone() == (None, None)


def test_schema_mismatch_leaves_existing_predictions_untouched(scored_world: psycopg.Connection) -> None:
    predict(D, Shard())
    before = rows(scored_world)
    scored_world.execute("alter table marts.customer_churn_features alter column transactions_90d type text")
    done = cli("--ds", D.isoformat())
    assert done.returncode == 43, done.stderr
    assert rows(scored_world) == before


def test_no_champion_exits_40(db: psycopg.Connection) -> None:
    create_features_mart(db)
    fill_features(db, D, 10)
    done = cli("--ds", D.isoformat())
    assert done.returncode == 40, done.stderr
    assert done.stderr.strip().splitlines() == ["predictor: error: no champion model: train and promote one first, or pin --model-version"]
    register_model(db, promote=False)  # registered but never promoted: still no champion
    assert cli("--ds", D.isoformat()).returncode == 40


def test_unknown_version_exits_41(scored_world: psycopg.Connection) -> None:
    done = cli("--ds", D.isoformat(), "--model-version", "999")
    assert done.returncode == 41, done.stderr
    assert "model version 999" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_pinned_version_is_used(scored_world: psycopg.Connection, tmp_path: Path) -> None:
    champion = scored_world.execute("select version from ml.model_champion").fetchone()
    pinned = register_model(scored_world, promote=False, seed=5)
    done = cli("--ds", D.isoformat(), "--model-version", str(pinned.version), env={"PIPELINE_RESULT_PATH": str(tmp_path / "r.json")})
    assert done.returncode == 0, done.stderr
    assert champion is not None
    assert json.loads((tmp_path / "r.json").read_text())["model_version"] == pinned.version != champion[0]
    assert {r[2] for r in rows(scored_world)} == {pinned.version}


def test_empty_snapshot_exits_42(scored_world: psycopg.Connection) -> None:
    done = cli("--ds", "2030-01-01")
    assert done.returncode == 42, done.stderr
    assert "no rows for as_of_date 2030-01-01" in done.stderr


def test_missing_features_mart_exits_42(db: psycopg.Connection) -> None:
    register_model(db)
    done = cli("--ds", D.isoformat())
    assert done.returncode == 42, done.stderr
    assert "does not exist" in done.stderr


def test_corrupted_artifact_exits_44(scored_world: psycopg.Connection) -> None:
    scored_world.execute("update ml.model_versions set artifact = artifact || '\\x00'::bytea")
    done = cli("--ds", D.isoformat())
    assert done.returncode == 44, done.stderr
    assert "integrity" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_artifact_breaking_the_input_convention_exits_44(db: psycopg.Connection) -> None:
    """A registry row whose feature list does not match the ONNX inputs is refused, not half-scored."""
    register_model(db)
    db.execute("update ml.model_versions set features = features - 0")  # drop the first feature from the list
    create_features_mart(db)
    fill_features(db, D, 10)
    done = cli("--ds", D.isoformat())
    assert done.returncode == 44, done.stderr
    assert "inputs not in the registry's feature list: days_since_last_transaction" in done.stderr


@pytest.mark.parametrize("shard", ["4/4", "1", "a/b", "0/0"])
def test_bad_shard_exits_15(shard: str, scored_world: psycopg.Connection) -> None:
    done = cli("--ds", D.isoformat(), "--shard", shard)
    assert done.returncode == 15, done.stderr
    assert done.stderr.startswith("predictor: error:")


def test_result_json_reports_drift(db: psycopg.Connection, tmp_path: Path) -> None:
    """A population unlike the training one is flagged (PSI above the threshold) and the run still succeeds."""
    register_model(db)
    create_features_mart(db)
    fill_features(db, D, 2000)
    db.execute("update marts.customer_churn_features set days_since_last_transaction = 199, transactions_90d = 0, account_type = 'basic'")
    out = tmp_path / "result.json"
    done = cli("--ds", D.isoformat(), "--shard", "1/2", env={"PIPELINE_RESULT_PATH": str(out)})
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["drift"] is True and result["psi"] > 0.2
    assert result["shard"] == 1 and result["shard_count"] == 2 and result["rows"] > 0
    assert db.execute("select drift, psi from ml.prediction_batches").fetchone() == (True, pytest.approx(result["psi"], abs=1e-6))
    # same batch, a threshold above its PSI: no drift flag
    done = cli("--ds", D.isoformat(), "--shard", "1/2", "--drift-threshold", str(result["psi"] + 1), env={"PIPELINE_RESULT_PATH": str(out)})
    assert done.returncode == 0 and json.loads(out.read_text())["drift"] is False


def test_customer_ids_and_categories_with_csv_specials_round_trip(db: psycopg.Connection) -> None:
    register_model(db)
    create_features_mart(db)
    odd = ["", "a,b", 'quote"d', "line\nbreak", "tab\tx", "back\\slash", "ünïcødé"]
    for i, cid in enumerate(odd):
        db.execute(
            "insert into marts.customer_churn_features (as_of_date, customer_id, transactions_90d, region, account_type)"
            " values (%s, %s, %s, %s, %s)",
            (D, cid, i, cid or None, "" if i % 2 else None),
        )
    result = predict(D, Shard())
    assert result["rows"] == len(odd)
    assert sorted(r[1] for r in rows(db)) == sorted(odd)


def test_a_new_shard_count_re_partitions_the_date_and_keeps_the_other_shards(scored_world: psycopg.Connection) -> None:
    """One run of 1 shard, then shard 1 of 4 with a newer model: only that shard's rows change, none is lost."""
    predict(D, Shard())
    whole = rows(scored_world)
    first_version = whole[0][2]
    newer = register_model(scored_world, seed=99)
    result = predict(D, Shard(1, 4))
    after = rows(scored_world)
    assert [r[1] for r in after] == [r[1] for r in whole]  # the same 3 000 customers, each once
    changed = {r[1] for r in after if r[2] == newer.version}
    assert len(changed) == result["rows"] == result["replaced_rows"] > 0
    assert {r[2] for r in after if r[1] not in changed} == {first_version}
    leaves = scored_world.execute(
        "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid"
        " where i.inhparent = 'ml.churn_predictions_p20250301'::regclass order by 1"
    ).fetchall()
    assert [name for (name,) in leaves] == [f"churn_predictions_p20250301_s{i}of4" for i in range(4)]
    # the shard predicate the predictor reads with is the partitioning that routed the rows
    in_shard_1 = scored_world.execute("select customer_id from ml.churn_predictions_p20250301_s1of4").fetchall()
    assert {c for (c,) in in_shard_1} == changed


def test_an_unpartitioned_predictions_table_is_migrated_with_its_rows(scored_world: psycopg.Connection) -> None:
    """A warehouse written before predictions were partitioned keeps its rows: the first run moves them over."""
    scored_world.execute(
        """
        create schema if not exists ml;
        create table ml.churn_predictions (as_of_date date not null, customer_id text not null, model_version bigint not null,
            churn_probability double precision not null check (churn_probability between 0 and 1),
            risk_band text not null check (risk_band in ('low', 'medium', 'high')), scored_at timestamptz not null,
            primary key (as_of_date, customer_id));
        insert into ml.churn_predictions values
            ('2025-01-01', 'old-1', 1, 0.5, 'medium', now()), ('2025-01-02', 'old-2', 1, 0.1, 'low', now());
        """
    )
    predict(D, Shard())
    assert scored_world.execute("select relkind from pg_class where oid = 'ml.churn_predictions'::regclass").fetchone() == ("p",)
    kept = scored_world.execute("select as_of_date::text, customer_id from ml.churn_predictions where as_of_date < %s order by 1", (D,))
    assert kept.fetchall() == [("2025-01-01", "old-1"), ("2025-01-02", "old-2")]
    assert scored_world.execute("select count(*) from ml.churn_predictions where as_of_date = %s", (D,)).fetchone() == (3000,)

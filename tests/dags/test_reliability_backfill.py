"""A 30-date backfill with several runs in flight gives what running the dates one by one gives (issue 10).

What `max_active_runs > 1` changes is which stages of different dates overlap. This test runs the
DAG's own command lines (`STAGES[...].argv(ds=D)`) with the local runner's launcher (`uv run
--frozen --project <stage>`) for 30 dates twice, each time into a database of its own: once one
date after the other, once as three runs in flight at a time. Each run is the cheap part of the
pipeline, the part whose result must not depend on the order: `ingest load --ds D` for every
date, and `dbt-stage build --layer intermediate` (the incremental model with the load watermark)
on every 15th date, so builds race the loads of other dates. Afterwards both sides get the next
scheduled run's intermediate and marts builds, and raw, rejected lines, the activity table and the
features mart must be identical. (Training and scoring are left out on purpose: a date's
champion depends on the dates before it, which is why the DAG itself keeps max_active_runs=1.)
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import subprocess
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest
from dag_helpers import REPO_ROOT
from psycopg import sql

from ml_pipeline_lib.stages import DBT_INTERMEDIATE, DBT_MARTS, DBT_STAGING, INGEST, StageSpec
from mlp_common.warehouse import drop_database
from tests.db_helpers import conninfo

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.reliability]

FIRST = date(2024, 3, 2)
DATES = [FIRST + timedelta(days=i) for i in range(30)]
NEXT_RUN = DATES[-1] + timedelta(days=1)
IN_FLIGHT = 3
COMPARED = {
    "raw.transactions": "select {cols} from raw.transactions",
    "raw.transactions_rejected": "select _line_number, reason, raw_line, _partition_date from raw.transactions_rejected",
    "intermediate.int_customer_activity_aggregated_to_daily": "select {cols} from intermediate.int_customer_activity_aggregated_to_daily",
    "marts.customer_churn_features": "select {cols} from marts.customer_churn_features",
}


def uv_run(project: str, *argv: str, env: dict[str, str]) -> None:
    """A stage command line, launched as the local runner launches it."""
    uv = os.environ.get("UV") or shutil.which("uv") or "uv"
    command = [uv, "run", "--quiet", "--frozen", "--project", str(REPO_ROOT / project), "--", *argv]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr[-2000:]}"


def run_stage(spec: StageSpec, day: date, env: dict[str, str]) -> None:
    """The stage's DAG command line for `day`."""
    uv_run(spec.project, *spec.argv(ds=day.isoformat()), env=env)


def dag_run(day: date, env: dict[str, str]) -> None:
    """The cheap part of one DAG run for `day`."""
    run_stage(INGEST, day, env)
    if (day - FIRST).days % 15 == 14:
        run_stage(DBT_INTERMEDIATE, day, env)


def fingerprint(db: psycopg.Connection) -> dict[str, tuple[int, str]]:
    """(rows, md5 of the sorted rows) per compared table, without load times, batch ids and invocation ids."""
    prints = {}
    for relation, query in COMPARED.items():
        schema, table = relation.split(".")
        columns = [
            r[0]
            for r in db.execute(
                "select column_name from information_schema.columns where table_schema = %s and table_name = %s"
                " and column_name not in ('_loaded_at', '_batch_id', '_loaded_at_max') and column_name not like '\\_dbt%%'"
                " and column_name not like '\\_built%%' order by ordinal_position",
                (schema, table),
            )
        ]
        select = sql.SQL(query.replace("{cols}", "{}")).format(sql.SQL(", ").join(map(sql.Identifier, columns)))
        row = db.execute(
            sql.SQL("select count(*), md5(string_agg(t::text, '|' order by t::text)) from ({}) as t").format(select)
        ).fetchone()
        assert row is not None
        prints[relation] = (int(row[0]), str(row[1]))
    return prints


@pytest.fixture
def two_databases(warehouse_server: dict[str, str]):  # type: ignore[no-untyped-def]
    names = [f"test_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    admin = {**warehouse_server, "PGDATABASE": warehouse_server.get("PGDATABASE", "postgres")}
    with psycopg.connect(conninfo(admin), autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        yield [{**warehouse_server, "PGDATABASE": name} for name in names]
    finally:
        with psycopg.connect(conninfo(admin), autocommit=True) as conn:
            for name in names:
                drop_database(conn, name)


def test_reliability_backfill_of_30_dates_in_parallel_equals_one_by_one(two_databases, tmp_path: Path, reliability) -> None:
    landing, history = tmp_path / "landing", tmp_path / "history"
    base = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    uv_run("ingest", "ingest", "generate", "--out", str(landing), "--customers", "150", "--start", "2023-09-01", "--end", str(NEXT_RUN),
           "--bad-row-rate", "0.01", env=base)  # fmt: skip
    for table in ("transactions", "customers"):  # the history before the backfill, loaded once per side
        (history / table).mkdir(parents=True)
        for path in (landing / table).glob("*.csv"):
            if path.stem < FIRST.isoformat():
                shutil.copy2(path, history / table / path.name)

    sides = []
    for i, warehouse in enumerate(two_databases):
        env = {**base, **warehouse, "PIPELINE_LANDING_DIR": str(landing), "DBT_TARGET_PATH": str(tmp_path / f"target-{i}")}
        env["DBT_LOG_PATH"] = str(tmp_path / f"logs-{i}")
        history_env = {**env, "PIPELINE_RESULT_PATH": str(tmp_path / f"history-{i}.json")}
        uv_run("ingest", "ingest", "load", "--history", "--source", str(history), env=history_env)
        run_stage(DBT_STAGING, FIRST - timedelta(days=1), env)  # the views; the 15th date's build makes the activity table
        sides.append(env)
    serial, parallel = sides

    started = time.monotonic()
    for day in DATES:
        dag_run(day, serial)
    serial_seconds = time.monotonic() - started
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
        for done in concurrent.futures.as_completed([pool.submit(dag_run, day, parallel) for day in DATES]):
            done.result()
    parallel_seconds = time.monotonic() - started
    for env in sides:  # the next scheduled run
        run_stage(DBT_INTERMEDIATE, NEXT_RUN, env)
        run_stage(DBT_MARTS, NEXT_RUN, env)

    prints = []
    for env in sides:
        with psycopg.connect(conninfo(env), autocommit=True) as db:
            prints.append(fingerprint(db))
    print(f"backfill of {len(DATES)} dates: one by one {serial_seconds:.1f} s, {IN_FLIGHT} in flight {parallel_seconds:.1f} s; {prints[0]}")
    reliability.fault(survived=prints[0] == prints[1])  # the fault: 30 dates with runs overlapping
    with psycopg.connect(conninfo(parallel), autocommit=True) as db:  # every line of every backfilled day landed or rejected
        for day in DATES:
            lines = (landing / "transactions" / f"{day}.csv").read_bytes().count(b"\n") - 1
            row = db.execute(
                "select (select count(*) from raw.transactions where _partition_date = %(d)s)"
                " + (select count(*) from raw.transactions_rejected where _partition_date = %(d)s)",
                {"d": day},
            ).fetchone()
            reliability.lines_lost += abs(lines - int(row[0])) if row else lines
    assert reliability.lines_lost == 0
    assert prints[0]["raw.transactions"][0] > 0 and prints[0]["marts.customer_churn_features"][0] > 0
    assert prints[1] == prints[0]

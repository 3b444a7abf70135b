"""Reliability of the dbt stage (issue 10): concurrent builds of one date, a load that commits while
a build reads raw, SIGKILL mid-build, and schema drift in raw or in an incremental model.

The fixture world (raw tables from the ingest contract, 60 customers, every layer built for D) is
built once per module in a template database; each test gets a copy (`create database ... template`),
so that none pays for the full build again.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from mlp_common.warehouse import RAW_LOAD_LOCK, drop_database, session_lock
from tests.db_helpers import conninfo, wait_for_sessions_to_end
from tests.dbt.dbt_helpers import build_all, dbt_stage, stage_env, table_rows
from tests.dbt.raw_fixtures import TRANSACTION_COLUMNS, create_partitions, insert_rows, load_fixture, record_batch
from tests.faults import failed_cleanly_and_retryably, kill_after, restart_warehouse_under

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.reliability]

D = "2024-06-01"
NEXT = "2024-06-02"
ACTIVITY = "intermediate.int_customer_activity_aggregated_to_daily"
FEATURES = "marts.customer_churn_features"
TRAINING = "marts.customer_churn_training_set"
TABLES = {ACTIVITY: "activity_date, customer_id, category", FEATURES: "as_of_date, customer_id", TRAINING: "cutoff_date, customer_id"}


def snapshot(db: psycopg.Connection) -> dict[str, list[tuple]]:
    return {relation: table_rows(db, relation, order) for relation, order in TABLES.items()}


def admin(server: dict[str, str]) -> psycopg.Connection:
    return psycopg.connect(conninfo({**server, "PGDATABASE": server.get("PGDATABASE", "postgres")}), autocommit=True)


@pytest.fixture(scope="module")
def world_template(warehouse_server: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database with the raw fixture and every layer built for D; used only as a template."""
    name = f"tpl_{uuid.uuid4().hex[:12]}"
    with admin(warehouse_server) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    env = {**warehouse_server, "PGDATABASE": name}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with psycopg.connect(conninfo(env), autocommit=True) as conn:
            load_fixture(conn)
        build_all(tmp_path_factory.mktemp("world"), D)
        yield name
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        with admin(warehouse_server) as conn:
            drop_database(conn, name)


@contextmanager
def copy_of(template: str, server: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[psycopg.Connection]:
    """A fresh copy of the template database; PG* point at it until the block ends."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with admin(server) as conn:
        conn.execute(sql.SQL("create database {} template {}").format(sql.Identifier(name), sql.Identifier(template)))
    env = {**server, "PGDATABASE": name}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        with psycopg.connect(conninfo(env), autocommit=True) as conn:
            yield conn
    finally:
        with admin(server) as conn:
            drop_database(conn, name)


@pytest.fixture
def world(world_template: str, warehouse_server: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[psycopg.Connection]:
    """A copy of the built world for one test."""
    with copy_of(world_template, warehouse_server, monkeypatch) as conn:
        yield conn


def late_transactions(customer: str, day: date, loaded_at: str | None = None, n: int = 3) -> list[dict[str, object]]:
    return [
        {
            "transaction_id": f"{customer}-{i}",
            "customer_id": customer,
            "amount": "42.00",
            "transaction_date": day.isoformat(),
            "category": "grocery",
            "merchant_id": "M1",
            "_partition_date": day,
            **({"_loaded_at": loaded_at} if loaded_at else {}),
        }
        for i in range(n)
    ]


def spawn_build(tmp_path: Path, layer: str, ds: str, name: str) -> subprocess.Popen[str]:
    folder = tmp_path / name
    folder.mkdir()
    return subprocess.Popen(
        [sys.executable, "-m", "dbt_stage.cli", "build", "--layer", layer, "--ds", ds],
        env=stage_env(folder),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_reliability_two_builds_of_the_same_date_at_once_are_serialised(world: psycopg.Connection, tmp_path: Path, reliability) -> None:
    """A backfill racing the scheduled run: two `dbt-stage build` of D (every layer) at the same time
    both succeed, one after the other, and leave exactly what one build leaves: no duplicate rows."""
    insert_rows(world, "transactions", TRANSACTION_COLUMNS, late_transactions("C9001", date(2024, 5, 30), "2024-07-03 07:00:00+00"))
    procs = [spawn_build(tmp_path, "all", D, f"run{i}") for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    reliability.fault()
    raced = snapshot(world)
    for relation, rows in raced.items():
        assert len(rows) == len(set(rows)), f"{relation} has duplicate rows after two concurrent builds"
    keys = world.execute(f"select count(*), count(distinct (as_of_date, customer_id)) from {FEATURES}").fetchone()
    assert keys is not None and keys[0] == keys[1]
    assert any(r[1] == "C9001" for r in raced[FEATURES] if str(r[0]) == D), "the new customer's rows never reached the mart"
    alone = dbt_stage(tmp_path, "build", "--layer", "all", "--ds", D)  # one more build alone: nothing changes
    assert alone.returncode == 0, alone.stderr
    assert snapshot(world) == raced


def test_reliability_load_committing_during_a_build_is_not_lost(world: psycopg.Connection, tmp_path: Path, reliability) -> None:
    """A load that began before an intermediate build and commits after it must not end up below the
    build's watermark (max _loaded_at seen), where every later incremental run would skip it.

    Load A (a late file for 2024-05-30) opens its transaction and writes; load B (another date) starts
    later and commits first; the build starts while A is open: it waits for A (the raw-load lock
    ingest holds shared), so A's rows are in the activity table after that one build."""
    day_a, day_b = date(2024, 5, 30), date(2024, 5, 31)
    create_partitions(world, "transactions", [day_a, day_b])
    same_db = {"conninfo": world.info.dsn, "password": world.info.password}
    with psycopg.connect(**same_db) as load_a, psycopg.connect(**same_db) as load_b:
        with session_lock(load_a, *RAW_LOAD_LOCK, shared=True), load_a.transaction():
            land_one_line(load_a, "A1", "C9002", "42.00", "grocery", day_a, 90)
            time.sleep(0.05)
            with session_lock(load_b, *RAW_LOAD_LOCK, shared=True), load_b.transaction():
                land_one_line(load_b, "B1", "C9003", "17.00", "books", day_b, 91)
            build = spawn_build(tmp_path, "intermediate", NEXT, "build")
            waiting = wait_for_lock_waiter(world)
            assert build.poll() is None and waiting, "the build did not wait for the open load"
        _, err = build.communicate(timeout=600)
        assert build.returncode == 0, err[-2000:]
    reliability.fault()
    customers = {r[0] for r in world.execute(f"select distinct customer_id from {ACTIVITY}")}
    assert {"C9002", "C9003"} <= customers, "a load that committed during the build was lost below the watermark"


def land_one_line(
    conn: psycopg.Connection, transaction_id: str, customer_id: str, amount: str, category: str, day: date, batch: int
) -> None:
    """One transaction line of `day`, written as a load writes it (in the caller's open transaction):
    the line, stamped now(), and its batch in raw.load_batches."""
    conn.execute(
        "insert into raw.transactions (transaction_id, customer_id, amount, transaction_date, category, merchant_id,"
        " _line_number, _partition_date, _batch_id) values (%s, %s, %s, %s, %s, 'M1', 2, %s, %s)",
        (transaction_id, customer_id, amount, day.isoformat(), category, day, batch),
    )
    record_batch(conn, "transactions", [day])


def wait_for_lock_waiter(db: psycopg.Connection, seconds: float = 60) -> bool:
    """True once the dbt stage's lock session waits for an advisory lock."""
    deadline = time.monotonic() + seconds
    query = (
        "select count(*) from pg_locks as l inner join pg_stat_activity as a on a.pid = l.pid"
        " where l.locktype = 'advisory' and not l.granted and a.application_name = 'dbt-stage-lock'"
    )
    while time.monotonic() < deadline:
        if db.execute(query).fetchone() != (0,):
            return True
        time.sleep(0.1)
    return False


def test_reliability_sigkill_mid_build_leaves_old_or_new_tables(
    world_template: str, warehouse_server: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, reliability
) -> None:
    """SIGKILL `dbt-stage build --layer all` at random moments: every table is then exactly as before
    or exactly as after a complete build (dbt commits each model in one transaction), and the retry
    completes. Each attempt starts from a fresh copy of the built world plus the same late rows."""
    late = late_transactions("C9004", date(2024, 5, 29), "2024-07-03 07:00:00+00")
    with copy_of(world_template, warehouse_server, monkeypatch) as db:
        old = snapshot(db)
        insert_rows(db, "transactions", TRANSACTION_COLUMNS, late)
        started = time.monotonic()
        complete = dbt_stage(tmp_path, "build", "--layer", "all", "--ds", D)
        assert complete.returncode == 0, complete.stderr
        full_seconds = time.monotonic() - started
        new = snapshot(db)
    assert new != old
    rng = random.Random()
    for attempt in range(2):
        with copy_of(world_template, warehouse_server, monkeypatch) as db:
            insert_rows(db, "transactions", TRANSACTION_COLUMNS, late)
            delay = rng.uniform(0.3, 0.9) * full_seconds
            proc = spawn_build(tmp_path, "all", D, f"kill{attempt}")
            killed = kill_after(proc, delay)
            wait_for_sessions_to_end(db)
            state = snapshot(db)
            for relation in TABLES:
                assert state[relation] in (old[relation], new[relation]), f"{relation}: neither old nor new after SIGKILL at {delay:.1f} s"
            if killed:
                reliability.fault()
            retry = dbt_stage(tmp_path, "build", "--layer", "all", "--ds", D)
            assert retry.returncode == 0, retry.stderr
            assert snapshot(db) == new


def test_reliability_schema_drift_in_raw_and_in_an_incremental_model(world: psycopg.Connection, tmp_path: Path, reliability) -> None:
    """A new raw column is ignored (staging names its columns; ingest refuses such files anyway): the
    features stay identical. A removed raw column, or an incremental mart whose table no longer
    matches its model (`on_schema_change='fail'`), fails the build with one clear line (exit 21)
    and leaves the marts as they were."""
    before = snapshot(world)
    world.execute("alter table raw.transactions add column channel text default 'web'")
    added = dbt_stage(tmp_path, "build", "--layer", "all", "--ds", D)
    reliability.bad_inputs += 1
    assert added.returncode == 0, added.stderr
    assert snapshot(world) == before

    world.execute(f"alter table {FEATURES} add column legacy_score double precision")
    drifted = dbt_stage(tmp_path, "build", "--layer", "marts", "--ds", D)
    reliability.bad_inputs += 1
    assert drifted.returncode == 21, drifted.stderr
    (line,) = drifted.stderr.strip().splitlines()
    assert "customer_churn_features" in line and "no longer in the model legacy_score" in line and "--full-refresh" in line, line
    world.execute(f"alter table {FEATURES} drop column legacy_score")
    assert snapshot(world) == before

    world.execute("alter table raw.transactions drop column merchant_id cascade")  # the staging views go with it
    removed = dbt_stage(tmp_path, "build", "--layer", "staging", "--ds", D)
    reliability.bad_inputs += 1
    assert removed.returncode == 21, removed.stderr
    (line,) = removed.stderr.strip().splitlines()
    assert "merchant_id" in line and "does not exist" in line, line
    assert snapshot(world) == before


def test_reliability_warehouse_restart_mid_build_is_a_clean_retryable_failure(private_warehouse, tmp_path: Path, reliability) -> None:
    """A private embedded PostgreSQL restarted once dbt is running models: exit 50 (the DAG retries
    it), one stderr line, and the retry builds every layer."""
    with psycopg.connect("", autocommit=True) as db:
        load_fixture(db)
        proc = spawn_build(tmp_path, "all", D, "restarted")
        deadline = time.monotonic() + 300
        running = "select count(*) from pg_stat_activity where application_name = 'dbt' and state = 'active'"
        while proc.poll() is None and db.execute(running).fetchone() == (0,):
            assert time.monotonic() < deadline, "dbt never started a query"
            time.sleep(0.05)
    assert proc.poll() is None, "the build finished before the restart"
    code, err = restart_warehouse_under(proc, private_warehouse)
    reliability.fault(survived=failed_cleanly_and_retryably(code, err))
    assert failed_cleanly_and_retryably(code, err), (code, err[-2000:])
    retry = dbt_stage(tmp_path, "build", "--layer", "all", "--ds", D)
    assert retry.returncode == 0, retry.stderr

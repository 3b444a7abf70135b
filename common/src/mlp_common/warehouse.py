"""Warehouse access for every stage: libpq environment in, psycopg 3 connection out.

No credentials ever pass through code or command lines: libpq reads PGHOST, PGPORT, PGDATABASE,
PGUSER, PGPASSWORD and PGSSLMODE from the environment itself.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from mlp_common.exit_codes import ExitCode, StageError

LIBPQ_VARIABLES = ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSSLMODE")


def connect(application_name: str = "ml-pipeline", *, autocommit: bool = False) -> psycopg.Connection:
    """Open a connection from the libpq variables; an unreachable server is a retryable StageError."""
    try:
        return psycopg.connect(
            "", application_name=application_name, autocommit=autocommit, connect_timeout=int(os.environ.get("PGCONNECT_TIMEOUT", "10"))
        )
    except psycopg.OperationalError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        target = f"{os.environ.get('PGHOST', 'default host')}:{os.environ.get('PGPORT', '5432')}"
        raise StageError(f"cannot reach the warehouse at {target}: {first_line}", ExitCode.WAREHOUSE_UNAVAILABLE) from exc


def advisory_key(*parts: str) -> int:
    """A stable signed 64-bit key for pg_advisory_xact_lock, derived from text (e.g. table and date)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_for_transaction(conn: psycopg.Connection, *parts: str, shared: bool = False) -> None:
    """Serialise writers of the same logical partition until the current transaction ends
    (`shared`: many holders at once, none while someone holds it exclusively)."""
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    conn.execute(sql.SQL("select {}(%s)").format(sql.Identifier(function)), (advisory_key(*parts),))


# Locks shared by stages (keys for `session_lock`):
# - RAW_LOAD: every ingest load holds it shared while it writes; a dbt build that reads raw
#   incrementally holds it exclusively, so a load's rows are committed before the build reads raw
#   or carry a `_loaded_at` later than anything the build saw (its watermark). Without it, a load
#   that began before a build and committed after it would sit below the watermark for ever.
# - DBT_BUILD: one dbt build at a time per database; intermediate and mart tables are shared by
#   every date, and two concurrent delete+insert runs of the same date duplicate rows.
RAW_LOAD_LOCK = ("raw", "load")
DBT_BUILD_LOCK = ("dbt", "build")


@contextmanager
def session_lock(conn: psycopg.Connection, *parts: str, shared: bool = False) -> Iterator[None]:
    """Hold an advisory lock on the session (across transactions) until the block ends.

    Taken in a transaction of its own, so that the caller's next transaction (and its `now()`)
    starts only once the lock is held. A session that dies (SIGKILL, lost connection) releases it.
    """
    key = advisory_key(*parts)
    lock, unlock = ("pg_advisory_lock_shared", "pg_advisory_unlock_shared") if shared else ("pg_advisory_lock", "pg_advisory_unlock")
    with conn.transaction():
        conn.execute(sql.SQL("select {}(%s)").format(sql.Identifier(lock)), (key,))
    try:
        yield
    finally:
        if not conn.closed and not conn.broken:
            with conn.transaction():
                conn.execute(sql.SQL("select {}(%s)").format(sql.Identifier(unlock)), (key,))


def qualified(schema: str, table: str) -> sql.Identifier:
    """A schema-qualified identifier, quoted: configuration never reaches SQL as raw text."""
    return sql.Identifier(schema, table)


@contextmanager
def transaction(conn: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """One explicit transaction: everything inside commits together or not at all."""
    with conn.transaction():
        yield conn


def drop_database(conn: psycopg.Connection, name: str, seconds: float = 60) -> None:
    """Drop a database (the tests' and benchmarks' scratch ones) and end the sessions still on it.

    `with (force)` refuses when an autovacuum worker happens to be on the database: it has no role a
    non-superuser may signal. A plain DROP cancels autovacuum itself, so after ending the client
    sessions we may end, that is the fallback. `conn` is an autocommit connection to another database.
    """
    drop = sql.SQL("drop database if exists {}").format(sql.Identifier(name))
    deadline = time.monotonic() + seconds
    while True:
        try:
            conn.execute(drop + sql.SQL(" with (force)"))
            return
        except psycopg.errors.InsufficientPrivilege:
            pass
        try:
            conn.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity"
                " where datname = %s and backend_type = 'client backend' and pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(drop)
            return
        except (psycopg.errors.ObjectInUse, psycopg.errors.InsufficientPrivilege):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)

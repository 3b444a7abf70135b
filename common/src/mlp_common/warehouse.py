"""Warehouse access for every stage: libpq environment in, psycopg 3 connection out.

No credentials ever pass through code or command lines: libpq reads PGHOST, PGPORT, PGDATABASE,
PGUSER, PGPASSWORD and PGSSLMODE from the environment itself.
"""

from __future__ import annotations

import hashlib
import os
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


def lock_for_transaction(conn: psycopg.Connection, *parts: str) -> None:
    """Serialise writers of the same logical partition until the current transaction ends."""
    conn.execute("select pg_advisory_xact_lock(%s)", (advisory_key(*parts),))


def qualified(schema: str, table: str) -> sql.Identifier:
    """A schema-qualified identifier, quoted: configuration never reaches SQL as raw text."""
    return sql.Identifier(schema, table)


@contextmanager
def transaction(conn: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """One explicit transaction: everything inside commits together or not at all."""
    with conn.transaction():
        yield conn

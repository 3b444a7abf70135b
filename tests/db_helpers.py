"""Small warehouse helpers shared by every stage's tests (psycopg only: importable from each environment)."""

from __future__ import annotations

import time

import psycopg

LIBPQ_KEYWORDS = {
    "PGHOST": "host",
    "PGPORT": "port",
    "PGDATABASE": "dbname",
    "PGUSER": "user",
    "PGPASSWORD": "password",
    "PGSSLMODE": "sslmode",
}


def conninfo(env: dict[str, str]) -> str:
    """A libpq connection string from PG* settings."""
    return psycopg.conninfo.make_conninfo(**{LIBPQ_KEYWORDS[k]: v for k, v in env.items() if k in LIBPQ_KEYWORDS and v})


def wait_for_sessions_to_end(db: psycopg.Connection, application: str = "%", seconds: float = 30) -> None:
    """Wait until no other session (named like `application`) is connected to `db`'s database: after a
    SIGKILL or a restart the server ends the dead process's session, and with it its transaction."""
    query = (
        "select count(*) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid() and application_name like %s"
    )
    deadline = time.monotonic() + seconds
    while db.execute(query, (application,)).fetchone() != (0,):
        assert time.monotonic() < deadline, f"sessions like {application!r} never ended"
        time.sleep(0.05)


def embedded_superuser(server: dict[str, str], dbname: str = "postgres") -> psycopg.Connection | None:
    """The embedded warehouse's superuser, through its trusted local socket (autocommit); None when
    `server` is not the embedded warehouse of this checkout."""
    from mlp_common.embedded import _socket_dir, state_dir

    socket = _socket_dir(state_dir())
    if not (socket / f".s.PGSQL.{server.get('PGPORT')}").exists():
        return None
    return psycopg.connect(host=str(socket), port=server["PGPORT"], user="postgres", dbname=dbname, autocommit=True)

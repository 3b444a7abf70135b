"""What the benchmark scripts share: the repository's paths, libpq settings, scratch databases, and
timing a subprocess (wall clock and peak RSS).

Stdlib and psycopg only, so that every stage environment can import it (the per-stage scripts run in
their stage's environment, `bench/run.py` in the bench environment).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from mlp_common import warehouse

REPO = Path(__file__).resolve().parents[1]
BENCH_DATA = REPO / ".data" / "bench"
_LIBPQ = {"PGHOST": "host", "PGPORT": "port", "PGDATABASE": "dbname", "PGUSER": "user", "PGPASSWORD": "password", "PGSSLMODE": "sslmode"}
# Variables of this process that must not reach a stage started with `uv run` (they would point uv at
# the wrong virtualenv); the local runner drops the same ones.
_DROPPED = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "UV_PROJECT_ENVIRONMENT")


def uv() -> str:
    return os.environ.get("UV") or shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")


def conninfo(env: Mapping[str, str], dbname: str | None = None) -> str:
    """A libpq connection string from PG* settings (`dbname` overrides PGDATABASE)."""
    params = {_LIBPQ[k]: v for k, v in env.items() if k in _LIBPQ and v}
    if dbname is not None:
        params["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**params)


def admin_database(env: Mapping[str, str]) -> str:
    return env.get("PGDATABASE") or "postgres"


def create_database(server: Mapping[str, str], name: str) -> dict[str, str]:
    """A fresh, empty database `name` on the server (dropped first if it exists); its PG* settings."""
    drop_database(server, name)
    with psycopg.connect(conninfo(server, admin_database(server)), autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    return {**server, "PGDATABASE": name}


def drop_database(server: Mapping[str, str], name: str) -> None:
    """Drop a scratch database (`mlp_common.warehouse.drop_database`); a failure is reported, not raised."""
    try:
        with psycopg.connect(conninfo(server, admin_database(server)), autocommit=True) as conn:
            warehouse.drop_database(conn, name)
    except psycopg.Error as exc:
        print(f"could not drop scratch database {name} ({str(exc).strip().splitlines()[0]}); drop it by hand", file=sys.stderr)


def load_average() -> float:
    """The 1-minute load average (the machine is shared: every figure is printed beside it)."""
    return round(os.getloadavg()[0], 2)


@dataclass
class Timed:
    """One measured subprocess: wall seconds, peak RSS (MB, the largest process of its tree), result JSON."""

    seconds: float
    peak_rss_mb: float
    load: float
    result: dict[str, Any] = field(default_factory=dict)


def wait_timed(proc: subprocess.Popen[Any], started: float) -> tuple[float, int, float]:
    """Reap `proc`: (wall seconds since `started`, exit code, peak RSS in MB of it and its waited-for children).

    `os.wait4` reports the child's own rusage, whose ru_maxrss (kB on Linux) covers the processes it
    reaped (uv's child python); a delta of RUSAGE_CHILDREN would not, since maxrss is not additive."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - started, proc.returncode, usage.ru_maxrss / 1024


# GNU time reports the peak RSS of the process it starts (and of what that one reaped): measured
# through it, a child's figure does not start from this (big) process's pages, as it does when
# this process forks the child itself (os.wait4 then reports at least our own RSS at the fork).
GNU_TIME = "/usr/bin/time"


def run_timed(argv: Sequence[str], env: Mapping[str, str], *, cwd: Path | None = None, quiet: bool = True) -> Timed:
    """Run a command to completion; its figures and the result JSON it wrote to PIPELINE_RESULT_PATH (if any)."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        result_path = Path(tmp) / "result.json"
        rss_path = Path(tmp) / "rss"
        child_env = {k: v for k, v in env.items() if k not in _DROPPED}
        child_env["PIPELINE_RESULT_PATH"] = str(result_path)
        command = list(argv)
        if Path(GNU_TIME).is_file():
            command = [GNU_TIME, "-f", "%M", "-o", str(rss_path), *command]
        load = load_average()
        started = time.perf_counter()
        proc = subprocess.Popen(
            command,
            env=child_env,
            cwd=cwd,
            stdout=subprocess.DEVNULL if quiet else None,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        stderr = proc.stderr.read()  # small: stages log to stdout, errors are one line on stderr
        seconds, code, rss = wait_timed(proc, started)
        if code != 0:
            raise SystemExit(f"{' '.join(map(str, argv[-8:]))} failed (exit {code}): {stderr.strip()[-2000:]}")
        if rss_path.is_file():  # kilobytes, the last line (GNU time may put a status line before it)
            rss = int(rss_path.read_text().split()[-1]) / 1024
        result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    return Timed(seconds=seconds, peak_rss_mb=rss, load=load, result=result)


def run_stage(project: str, argv: Sequence[str], env: Mapping[str, str]) -> Timed:
    """A stage command line in the stage's own environment, as the local runner starts it."""
    return run_timed([uv(), "run", "--quiet", "--frozen", "--project", str(REPO / project), "--", *argv], env, cwd=REPO / project)

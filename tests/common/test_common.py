"""The shared stage library: exit codes, the one-line error contract, results, and the model registry."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from datetime import date

import psycopg
import pytest
from psycopg import sql

from mlp_common import registry
from mlp_common.exit_codes import NON_RETRYABLE_CODES, ExitCode, StageError
from mlp_common.results import write_result
from mlp_common.warehouse import drop_database
from tests.db_helpers import conninfo, embedded_superuser

APP = """
import typer
from mlp_common.cli import run_app
from mlp_common.exit_codes import ExitCode, StageError
app = typer.Typer()
@app.command()
def go(kind: str) -> None:
    if kind == "stage":
        raise StageError("the input is bad\\nin two lines", ExitCode.HEADER_MISMATCH)
    if kind == "crash":
        {}["missing"]
    print("fine")
run_app(app, "demo")
"""


def test_exit_codes_are_distinct_and_classified():
    values = [int(c) for c in ExitCode]
    assert len(values) == len(set(values))
    assert ExitCode.WAREHOUSE_UNAVAILABLE.retryable and ExitCode.UNEXPECTED.retryable
    assert ExitCode.DATA_QUALITY in NON_RETRYABLE_CODES and ExitCode.HEADER_MISMATCH in NON_RETRYABLE_CODES
    assert ExitCode.OK not in NON_RETRYABLE_CODES


@pytest.mark.parametrize(
    ("kind", "code", "message"),
    [("stage", 14, "demo: error: the input is bad in two lines"), ("crash", 1, "unexpected KeyError")],
)
def test_errors_are_one_line_with_the_right_code(kind, code, message):
    proc = subprocess.run([sys.executable, "-c", APP, kind], capture_output=True, text=True)
    assert proc.returncode == code
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    ok = subprocess.run([sys.executable, "-c", APP, "fine"], capture_output=True, text=True)
    assert (ok.returncode, ok.stdout.strip()) == (0, "fine")


EXITING_APP = """
import atexit, threading, time, typer
from mlp_common.cli import run_app
from mlp_common.exit_codes import StageError

class Held:
    def __del__(self):
        print("finalised")

held = Held()  # a module global: the interpreter's finalisation would free it, and print
atexit.register(lambda: print("exit handler ran"))
app = typer.Typer()

@app.command()
def go(code: int) -> None:
    print("output of the stage")
    threading.Thread(target=lambda: (time.sleep(0.3), print("worker finished"))).start()
    if code:
        raise StageError("bad input", code)

run_app(app, "demo")
"""


@pytest.mark.parametrize("code", [0, 14])
def test_a_stage_exits_like_python_but_skips_freeing_every_object(code):
    """A stage's exit runs what a normal exit runs (its worker threads are joined, exit handlers run,
    buffered output is written, the exit code kept) but not the finalisation that frees every object
    one by one (0.4-0.5 s after a dbt build)."""
    proc = subprocess.run([sys.executable, "-c", EXITING_APP, str(code)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc.stderr
    printed = [line for line in proc.stdout.splitlines() if not line.startswith("{")]  # not the JSON log lines
    assert printed == ["output of the stage", "worker finished", "exit handler ran"], proc.stdout


def test_unreachable_warehouse_is_a_retryable_one_liner(monkeypatch):
    app = APP.replace('print("fine")', "from mlp_common.warehouse import connect; connect()")
    env = {"PGHOST": "127.0.0.1", "PGPORT": "1", "PGCONNECT_TIMEOUT": "2", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", app, "fine"], capture_output=True, text=True, env=env)
    assert proc.returncode == ExitCode.WAREHOUSE_UNAVAILABLE
    assert "cannot reach the warehouse at 127.0.0.1:1" in proc.stderr


def test_result_is_written_atomically_where_configured(tmp_path, monkeypatch):
    target = tmp_path / "xcom" / "return.json"
    monkeypatch.setenv("PIPELINE_RESULT_PATH", str(target))
    assert write_result({"rows": 3, "day": date(2024, 1, 2)}) == target
    assert json.loads(target.read_text()) == {"day": "2024-01-02", "rows": 3}
    assert not list(target.parent.glob(".*tmp"))


def _new_version(metric: float, artifact: bytes = b"onnx-bytes") -> registry.NewVersion:
    return registry.NewVersion(
        as_of_date=date(2024, 6, 1),
        data_window={"train": ["2024-01-01", "2024-03-01"]},
        row_counts={"train": 10, "holdout": 5},
        class_balance={"churned": 0.3},
        features=[{"name": "recency_days", "type": "numeric"}],
        metrics={"candidate": {"roc_auc": metric}},
        score_reference={"bin_edges": [0.0, 1.0], "proportions": [1.0]},
        code_version="test",
        artifact=artifact,
    )


@pytest.mark.integration
def test_registry_round_trip_and_integrity(db: psycopg.Connection):
    registry.ensure_schema(db)
    version = registry.register(db, _new_version(0.8))
    meta = registry.get_version(db, version)
    assert meta.feature_names == ["recency_days"] and meta.artifact_sha256 == registry.sha256(b"onnx-bytes")
    assert registry.load_artifact(db, meta) == b"onnx-bytes"
    db.execute("update ml.model_versions set artifact = 'tampered'::bytea where version = %s", (version,))
    with pytest.raises(StageError) as caught:
        registry.load_artifact(db, meta)
    assert caught.value.code == ExitCode.ARTIFACT_INTEGRITY
    with pytest.raises(StageError) as unknown:
        registry.get_version(db, 999)
    assert unknown.value.code == ExitCode.UNKNOWN_MODEL_VERSION


@pytest.mark.integration
def test_promotion_is_compare_and_swap(db: psycopg.Connection):
    registry.ensure_schema(db)
    assert registry.champion(db) is None
    first, second, third = (registry.register(db, _new_version(m)) for m in (0.7, 0.8, 0.9))
    assert registry.promote(db, first, compared_with=None, reason="first model")
    assert not registry.promote(db, second, compared_with=None, reason="stale: thought there was no champion")
    assert registry.promote(db, third, compared_with=first, reason="better")
    assert not registry.promote(db, second, compared_with=first, reason="stale comparison")
    assert registry.champion(db).version == third
    decisions = db.execute("select version, promoted from ml.model_promotions order by decided_at, version").fetchall()
    assert decisions == [(first, True), (second, False), (third, True), (second, False)]


@pytest.mark.integration
def test_concurrent_promotions_leave_exactly_one_champion(db: psycopg.Connection, warehouse: dict[str, str]):
    registry.ensure_schema(db)
    base = registry.register(db, _new_version(0.7))
    registry.promote(db, base, compared_with=None, reason="base")
    candidates = [registry.register(db, _new_version(0.8 + i / 100)) for i in range(8)]
    wins: list[int] = []
    barrier = threading.Barrier(len(candidates))

    def race(version: int) -> None:
        with psycopg.connect("") as conn:
            barrier.wait()
            if registry.promote(conn, version, compared_with=base, reason="race"):
                wins.append(version)

    threads = [threading.Thread(target=race, args=(v,)) for v in candidates]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert db.execute("select count(*) from ml.model_champion").fetchone() == (1,)
    assert registry.champion(db).version == wins[0]


def test_drop_database_waits_out_a_session_it_may_not_end(warehouse_server: dict[str, str]):
    """`drop database ... with (force)` is refused while a session of a role we may not signal is on
    the database (an autovacuum worker, in the tests' flaky teardowns; the superuser here): the drop
    waits for it instead of failing."""
    name = f"test_drop_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(
        conninfo({**warehouse_server, "PGDATABASE": warehouse_server.get("PGDATABASE", "postgres")}), autocommit=True
    ) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        blocker = embedded_superuser(warehouse_server, dbname=name)
        if blocker is None:
            drop_database(admin, name)
            pytest.skip("needs the embedded warehouse's superuser")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # what the teardowns used to do
            admin.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))
        threading.Timer(1.0, blocker.close).start()
        started = time.monotonic()
        drop_database(admin, name, seconds=30)
        assert time.monotonic() - started >= 0.9
        assert admin.execute("select count(*) from pg_database where datname = %s", (name,)).fetchone() == (0,)


def test_a_new_embedded_warehouse_collates_by_code_point_with_the_builtin_provider(private_warehouse):
    """initdb's builtin provider: the same order as libc's C.UTF-8 (code points), compared in bytes
    (the marts' text sorts are ~20 % faster than under strcoll); lower() still knows non-ASCII."""
    with psycopg.connect(autocommit=True) as conn:
        provider = conn.execute("select datlocprovider, datlocale from pg_database where datname = current_database()").fetchone()
        assert provider == ("b", "C.UTF-8")
        words = ["b", "B", "a", "é", "Z", "ä", "10", "9"]
        ordered = [row[0] for row in conn.execute("select w from unnest(%s::text[]) as w order by w", (words,))]
        assert ordered == sorted(words)  # Python sorts str by code point
        assert conn.execute("select lower('ÄÉ')").fetchone() == ("äé",)

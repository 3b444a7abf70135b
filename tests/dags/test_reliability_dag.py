"""The whole DAG under stress (issue 10): two runs of the same date at once, with a recognisable
warehouse password that must never appear in any output; and the rendered pods, containers and
serialized DAG of every runner, which may carry only references to the secret.

The real run: a role whose password is SENTINEL owns a database; generated landing data is loaded;
then two `dag.test()` runs of D with the local runner start at the same moment (a backfill racing
the scheduled run), each with its own Airflow metadata DB (a copy of the session's migrated one).
Both must succeed and leave no duplicate anywhere; then every output is scanned for the password:
the processes' stdout/stderr and Airflow task logs, the metadata DBs (XCom, rendered fields,
serialized DAG), result JSON and reports, dbt's target/ and logs/, and every row of every table
of the warehouse (run records included).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from dag_helpers import AIRFLOW_HOME, DAGS_DIR, REPO_ROOT, load_dag, render_context
from psycopg import sql

from mlp_common.warehouse import drop_database
from tests.db_helpers import conninfo, embedded_superuser

SENTINEL = "pw-SENTINEL-" + uuid.uuid4().hex[:8]
D = "2024-06-01"
HISTORY = ("2024-01-01", "2024-06-01")
CUSTOMERS = 300

pytestmark = pytest.mark.reliability


def scan(path: Path, needle: bytes) -> list[str]:
    """Files under `path` (or the file) whose bytes contain `needle`."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return [str(p) for p in files if needle in p.read_bytes()]


# --- rendered, offline ---------------------------------------------------------------------------


@pytest.mark.parametrize("runner", ["local", "docker", "kubernetes"])
def test_reliability_rendered_tasks_and_serialized_dag_hold_no_password(runner: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the password in the worker's environment, nothing Airflow renders or stores carries it:
    Kubernetes pods reference the Secret, Docker passes it only as `private_environment` (never
    rendered, never serialized), the local runner inherits it at run time only."""
    from airflow.serialization.serialized_objects import DagSerialization

    monkeypatch.setenv("PGPASSWORD", SENTINEL)
    monkeypatch.setenv("PGUSER", "sentinel")
    dag = load_dag(runner, monkeypatch, PIPELINE_IMAGE_TAG="1.4.2")
    assert SENTINEL not in json.dumps(DagSerialization.to_dict(dag), default=str)
    context = render_context(dag)
    from ml_pipeline_lib.stages import PREDICT, STAGES

    rendered_tasks = [t for t in dag.tasks if t.task_id in STAGES and t.task_id != PREDICT.name]  # predict: mapped, see test_runners
    assert len(rendered_tasks) == len(STAGES) - 1
    for task in rendered_tasks:
        task.render_template_fields(context)
        rendered = {name: getattr(task, name, None) for name in task.template_fields}
        assert SENTINEL not in json.dumps(rendered, default=str), f"{task.task_id}: {sorted(rendered)}"
        if runner == "kubernetes":
            from kubernetes.client import ApiClient

            pod = ApiClient().sanitize_for_serialization(task.build_pod_request_obj(dry_run=True))
            assert SENTINEL not in json.dumps(pod)
            env = [e for c in pod["spec"]["containers"] for e in c.get("env", [])]
            assert not any(e["name"] == "PGPASSWORD" for e in env), "the password must come from the Secret, not a literal env"
            assert any(ref.get("secretRef", {}).get("name") for c in pod["spec"]["containers"] for ref in c.get("envFrom", []))
        if runner == "docker":
            assert SENTINEL not in json.dumps(getattr(task, "environment", {}), default=str)


# --- a real run, twice at once -------------------------------------------------------------------


def role_admin(server: dict[str, str]) -> psycopg.Connection:
    """A connection allowed to create roles: the test user if it has CREATEROLE, else the embedded
    server's superuser through its trusted local socket; skips when neither is available."""
    admin = {**server, "PGDATABASE": server.get("PGDATABASE", "postgres")}
    conn = psycopg.connect(conninfo(admin), autocommit=True)
    if conn.execute("select rolcreaterole or rolsuper from pg_roles where rolname = current_user").fetchone() == (True,):
        return conn
    conn.close()
    superuser = embedded_superuser(server)
    if superuser is None:
        pytest.skip("the warehouse user may not create roles (CREATEROLE) and this is not the embedded warehouse")
    return superuser


@pytest.fixture
def sentinel_database(warehouse_server: dict[str, str]):  # type: ignore[no-untyped-def]
    """A database owned by a role whose password is SENTINEL; yields the PG* settings to use it."""
    role, name = f"sentinel_{uuid.uuid4().hex[:8]}", f"test_{uuid.uuid4().hex[:12]}"
    with role_admin(warehouse_server) as conn:
        conn.execute(sql.SQL("create role {} login password {}").format(sql.Identifier(role), sql.Literal(SENTINEL)))
        conn.execute(sql.SQL("create database {} owner {}").format(sql.Identifier(name), sql.Identifier(role)))
    try:
        yield {**warehouse_server, "PGDATABASE": name, "PGUSER": role, "PGPASSWORD": SENTINEL}
    finally:
        with role_admin(warehouse_server) as conn:
            drop_database(conn, name)
            conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))


def uv_stage(project: str, *argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    uv = os.environ.get("UV") or shutil.which("uv") or "uv"
    command = [uv, "run", "--quiet", "--frozen", "--project", str(REPO_ROOT / project), "--", *argv]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr[-2000:]}"
    return proc


def airflow_home(root: Path, airflow_db: dict[str, str]) -> dict[str, str]:
    """An Airflow home of its own with a copy of the session's migrated metadata DB."""
    root.mkdir(parents=True)
    shutil.copy2(AIRFLOW_HOME / "airflow.db", root / "airflow.db")
    return {**airflow_db, "AIRFLOW_HOME": str(root)}


def run_dag(env: dict[str, str], out: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "ml_pipeline_lib.demo", D, "--json", "--conf", json.dumps({"shard_count": 2})],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    out.write_text(proc.stdout + "\n" + proc.stderr)
    start = proc.stdout.find("[\n")
    assert start >= 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout[start:])[0]


def why_failed(summary: dict[str, Any], log: Path) -> str:
    """What a reader of a CI failure needs: the run's state, every task's state and try, the results
    of the tasks that did not succeed, and the log lines that name an error (the whole summary is
    mostly the results of successful tasks)."""
    tasks = summary["tasks"]
    states = ", ".join(f"{key}={task['state']}/try {task['try_number']}" for key, task in tasks.items())
    failed = {key: task for key, task in tasks.items() if task["state"] not in ("success", "skipped")}
    lines = log.read_text(errors="replace").splitlines()
    errors = [line for line in lines if any(word in line for word in ("ERROR", "error:", "Traceback", "exit code", "exited"))]
    return "\n".join([f"run {summary['state']}: {states}", json.dumps(failed, default=str)[:3000], *errors[-40:]])[-8000:]


def every_row_as_text(db: psycopg.Connection) -> str:
    tables = db.execute(
        "select table_schema, table_name from information_schema.tables"
        " where table_schema not in ('pg_catalog', 'information_schema') and table_type = 'BASE TABLE'"
    ).fetchall()
    return "\n".join(
        str(row[0])
        for schema, table in tables
        for row in db.execute(sql.SQL("select t::text from {} as t").format(sql.Identifier(schema, table)))
    )


def test_reliability_same_date_twice_at_once_with_a_sentinel_password(
    sentinel_database: dict[str, str], airflow_db: dict[str, str], tmp_path: Path, reliability
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(sentinel_database)
    landing, reports = tmp_path / "landing", tmp_path / "reports"
    reports.mkdir()
    outputs = [
        uv_stage(
            "ingest",
            "ingest",
            "generate",
            "--out",
            str(landing),
            "--customers",
            str(CUSTOMERS),
            "--start",
            HISTORY[0],
            "--end",
            HISTORY[1],
            env=env,
        )
    ]
    outputs.append(
        uv_stage(
            "ingest",
            "ingest",
            "load",
            "--history",
            "--source",
            str(landing),
            env={**env, "PIPELINE_RESULT_PATH": str(tmp_path / "history.json")},
        )
    )

    runs = []
    for i in range(2):
        run_env = {
            **env,
            **airflow_home(tmp_path / f"airflow-{i}", airflow_db),
            "PYTHONPATH": str(DAGS_DIR),
            "PIPELINE_RUNNER": "local",
            "PIPELINE_REPO_ROOT": str(REPO_ROOT),
            "PIPELINE_LANDING_DIR": str(landing),
            "PIPELINE_REPORTS_DIR": str(reports),
            "DBT_TARGET_PATH": str(tmp_path / f"dbt-target-{i}"),
            "DBT_LOG_PATH": str(tmp_path / f"dbt-logs-{i}"),
        }
        runs.append(run_env)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        summaries = list(pool.map(lambda i: run_dag(runs[i], tmp_path / f"run-{i}.log"), range(2)))
    reliability.fault(survived=all(s["state"] == "success" for s in summaries))
    for i, summary in enumerate(summaries):
        assert summary["state"] == "success", why_failed(summary, tmp_path / f"run-{i}.log")

    with psycopg.connect(conninfo(sentinel_database), autocommit=True) as db:

        def one(query: str) -> tuple:
            row = db.execute(query).fetchone()
            assert row is not None
            return tuple(row)

        # serialised, no duplicates: one load's rows for D, one feature row and one score per customer
        assert one(f"select count(distinct _batch_id) from raw.transactions where _partition_date = '{D}'") == (1,)
        n, keys = one(f"select count(*), count(distinct customer_id) from marts.customer_churn_features where as_of_date = '{D}'")
        assert n == keys > 0
        scored = one(
            "select count(*), count(distinct customer_id), count(distinct model_version)"
            f" from ml.churn_predictions where as_of_date = '{D}'"
        )
        assert scored == (n, n, 1), "every customer scored once, by one model version"
        assert one("select count(*) from ml.model_champion") == (1,)
        # the password is nowhere in the warehouse (run records, results, registry, raw lines ...)
        assert SENTINEL not in every_row_as_text(db)

    needle = SENTINEL.encode()
    leaks = [f"ingest CLI output {i}" for i, p in enumerate(outputs) if SENTINEL in p.stdout + p.stderr]
    for folder in [tmp_path]:  # run logs, Airflow homes (task logs, metadata DB: XCom, rendered fields), results, reports, dbt
        leaks += scan(folder, needle)
    for folder in (REPO_ROOT / "dbt" / "target", REPO_ROOT / "dbt" / "logs"):  # where a run without DBT_*_PATH writes
        leaks += scan(folder, needle) if folder.exists() else []
    assert leaks == [], f"the warehouse password leaked into: {leaks}"

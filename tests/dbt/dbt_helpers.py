"""Running the real dbt stage from tests: the CLI as a subprocess (what the DAG runs) and dbt itself
in-process for `dbt test` runs whose per-test outcome we inspect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parents[2]
PROJECT = REPO / "dbt"


@dataclass
class StageRun:
    returncode: int
    result: dict[str, Any]
    stdout: str
    stderr: str


def stage_env(tmp_path: Path) -> dict[str, str]:
    """PG* from the test's warehouse fixture; dbt's artifacts and logs in the test's own folder, so
    concurrent test sessions never share target/."""
    return {
        **os.environ,
        "DBT_PROJECT_DIR": str(PROJECT),
        "DBT_PROFILES_DIR": str(PROJECT),
        "DBT_TARGET_PATH": str(tmp_path / "target"),
        "DBT_LOG_PATH": str(tmp_path / "logs"),
        "DBT_LOG_FORMAT": "text",
        "PIPELINE_RESULT_PATH": str(tmp_path / "result.json"),
    }


def dbt_stage(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> StageRun:
    """`dbt-stage ARGS` in a subprocess; returns its exit code and result JSON."""
    result_file = tmp_path / "result.json"
    result_file.unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "dbt_stage.cli", *args], env=env or stage_env(tmp_path), capture_output=True, text=True, timeout=600
    )
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    return StageRun(proc.returncode, result, proc.stdout, proc.stderr)


def build_all(tmp_path: Path, ds: str, *extra: str) -> StageRun:
    """The three layers in DAG order, stopping at the first failure."""
    run = None
    for layer in ("staging", "intermediate", "marts"):
        run = dbt_stage(tmp_path, "build", "--layer", layer, "--ds", ds, *extra)
        assert run.returncode == 0, f"{layer}: exit {run.returncode}: {run.stderr[-2000:]} {run.stdout[-3000:]}"
    assert run is not None
    return run


def test_outcomes(tmp_path: Path, ds: str, select: str) -> dict[str, str]:
    """`dbt test --select SELECT` in-process: {test name: status}."""
    from dbt.cli.main import dbtRunner

    env = stage_env(tmp_path)
    args = [
        "test",
        "--select",
        select,
        "--vars",
        json.dumps({"as_of_date": ds}),
        "--project-dir",
        env["DBT_PROJECT_DIR"],
        "--profiles-dir",
        env["DBT_PROFILES_DIR"],
        "--target-path",
        env["DBT_TARGET_PATH"],
        "--log-path",
        env["DBT_LOG_PATH"],
        "--quiet",
    ]
    res = dbtRunner().invoke(args)
    assert res.exception is None, res.exception
    return {r.node.name: str(r.status) for r in res.result.results}


test_outcomes.__test__ = False  # type: ignore[attr-defined]  # a helper, not a pytest test


def table_rows(conn: psycopg.Connection, relation: str, order_by: str) -> list[tuple[Any, ...]]:
    """All rows of a relation without its `_` metadata columns (those differ per invocation)."""
    schema, table = relation.split(".")
    columns = [
        row[0]
        for row in conn.execute(
            "select column_name from information_schema.columns where table_schema = %s and table_name = %s order by ordinal_position",
            (schema, table),
        )
        if not row[0].startswith("_")
    ]
    select = ", ".join(columns)
    return conn.execute(f"select {select} from {relation} order by {order_by}").fetchall()


def column_types(conn: psycopg.Connection, relation: str) -> dict[str, str]:
    schema, table = relation.split(".")
    rows = conn.execute(
        "select column_name, data_type from information_schema.columns"
        " where table_schema = %s and table_name = %s order by ordinal_position",
        (schema, table),
    )
    return {name: kind for name, kind in rows}

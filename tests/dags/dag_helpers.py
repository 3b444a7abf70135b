"""Shared by the DAG tests: paths, the tests' Airflow settings, DAG loading and offline rendering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO_ROOT / "dags"
DAG_FILE = DAGS_DIR / "ml_pipeline.py"
TEST_DAGS_DIR = Path(__file__).parent / "dagfiles"
AIRFLOW_HOME = REPO_ROOT / ".airflow" / "tests"

AIRFLOW_ENV = {
    "AIRFLOW_HOME": str(AIRFLOW_HOME),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
}

LOGICAL_DATE = "2024-03-01"


def load_dag(runner: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    """Parse the DAG file through a DagBag with the given runner; fail on any import error."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("PIPELINE_RUNNER", runner)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags["ml_pipeline"]


class FakeTaskInstance:
    """Just enough of a task instance for offline rendering: `ti.xcom_pull` in the run record's argv."""

    def __init__(self, xcoms: dict[str, Any]) -> None:
        self.xcoms = xcoms

    def xcom_pull(self, task_ids: str, key: str = "return_value", **_: Any) -> Any:
        return self.xcoms.get(task_ids)


def render_context(dag: Any, ds: str = LOGICAL_DATE, **xcoms: Any) -> dict[str, Any]:
    """The template context a task sees at run time, minus the metadata DB."""
    params = {name: dag.params[name] for name in dag.params}
    return {
        "ds": ds,
        "ds_nodash": ds.replace("-", ""),
        "run_id": f"scheduled__{ds}T00:00:00+00:00",
        "params": params,
        "ti": FakeTaskInstance({"collect_stage_results": '{"ingest": {"result": {"rows": 3}}}', **xcoms}),
    }

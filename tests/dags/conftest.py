"""Fixtures of the DAG tests: an Airflow home of their own and the DAG folder importable.

Airflow reads AIRFLOW_HOME when it is first imported, so it is set here, at collection time,
before any test imports Airflow: `<repo>/.airflow/tests` (git-ignored), a sqlite metadata DB
migrated once per session for the tests that run `dag.test()`. Helpers shared by the test
modules live in `dag_helpers.py` (pytest runs with `--import-mode=importlib`: conftest is not importable).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path[:0] = [p for p in (str(Path(__file__).parent), str(Path(__file__).resolve().parents[2] / "dags")) if p not in sys.path]

from dag_helpers import AIRFLOW_ENV, AIRFLOW_HOME  # noqa: E402 - needs the path above

AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
os.environ.update(AIRFLOW_ENV)
os.environ.pop("PIPELINE_RUNNER", None)


@pytest.fixture(scope="session")
def airflow_db() -> dict[str, str]:
    """A migrated sqlite metadata DB in the tests' AIRFLOW_HOME; returns the environment for subprocesses."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, env={**os.environ, **AIRFLOW_ENV}, capture_output=True)
    return dict(AIRFLOW_ENV)

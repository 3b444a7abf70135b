"""A test DAG: local-runner tasks whose stage is `python -c "sys.exit(CODE)"` in the `dags` uv project.

Used only by tests/dags/test_failure_semantics.py (run as a script with `dag.test()`): the real
stages are not needed to prove how exit codes map onto retries, and `dags` (the Airflow
environment) is a uv project every checkout has. It prints one JSON line: task states, tries, XComs.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG

from ml_pipeline_lib.callbacks import on_task_failure
from ml_pipeline_lib.config import RunnerConfig
from ml_pipeline_lib.runners.local import LocalRunner
from ml_pipeline_lib.stages import SMALL_RESOURCES, RetryPolicy, StageSpec

RETRY = RetryPolicy(retries=2, delay=timedelta(seconds=0), backoff=1.0, max_delay=timedelta(seconds=1))


def exiting(name: str, code: int) -> StageSpec:
    script = f"import json, os, sys; open(os.environ['PIPELINE_RESULT_PATH'], 'w').write(json.dumps(dict(code={code}))); sys.exit({code})"
    return StageSpec(
        name=name, image="dags", project="dags", argv_template=("python", "-c", script), resources=SMALL_RESOURCES, retry=RETRY
    )


runner = LocalRunner(RunnerConfig.from_env())
CODES = json.loads(os.environ.get("EXIT_CODES_DAG_CODES", '{"ok": 0, "bad_input": 20, "flaky": 1}'))

with DAG(
    dag_id="exit_codes",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    default_args={"on_failure_callback": on_task_failure},
) as dag:
    for task_name, exit_code in CODES.items():
        runner.operator(exiting(task_name, exit_code))


if __name__ == "__main__":
    from ml_pipeline_lib.demo import summarise_run

    run = dag.test(logical_date=datetime(2024, 3, 1, tzinfo=UTC))
    print("RESULT " + json.dumps({"state": str(run.state), **summarise_run(dag.dag_id, run.run_id)}, default=str), flush=True)
    sys.exit(0)

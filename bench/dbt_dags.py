"""Run our dbt project for one date as an Airflow DAG with `dag.test()`, one of two ways, and time it.

    layers  our DAG's three dbt tasks (`dbt-stage build --layer staging|intermediate|marts`), made by
            the local runner from the same stage specs as `dags/ml_pipeline.py`;
    cosmos  astronomer-cosmos's DbtDag over the same project: one task per dbt model
            (`TestBehavior.BUILD`: each task is `dbt build --select <model>`, its tests included),
            rendered from the manifest (`LoadMode.DBT_MANIFEST`), run by `ExecutionMode.LOCAL` with
            the dbt environment's own `dbt` executable and our `dbt/profiles.yml`.

Both run in this process under the same Airflow (3.3, sqlite metadata DB under AIRFLOW_HOME). `dag.test()`
needs the DAG in the DAG folder: a two-line DAG file in `$AIRFLOW_HOME/dags` builds it from this module
(`BENCH_DBT_MODE`, `BENCH_DS`, `BENCH_MANIFEST`). The figure compared is the run's span, from the first
task's start to the last task's end (what a scheduler spends on the run; the DAG's parse is apart and
reported as `dag_test_seconds - run_seconds`), after a one-task warm-up DAG has started `dag.test()`'s
in-process execution API (see `warm_up_dag`). The warehouse is whatever PG* points at; the caller
resets the dbt schemas before each run so that both start from the same state.

    uv run --project bench python bench/dbt_dags.py {layers|cosmos} --ds D --manifest PATH

Writes {"mode", "run_seconds", "dag_test_seconds", "tasks", "task_seconds", "states"} to $PIPELINE_RESULT_PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

# bench/dbt.py would shadow the `dbt` package (cosmos looks for it): keep this folder off the path.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
REPO = HERE.parent
sys.path.insert(0, str(REPO / "dags"))

PARAMS = {"churn_horizon_days": 90}


DAG_FILE = """# written by bench/dbt_dags.py: the DAG it is asked to time (airflow dag.test() needs it in the DAG folder)
import importlib.util, os
spec = importlib.util.spec_from_file_location("bench_dbt_dags", {module!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
dag = module.build_dag(os.environ["BENCH_DBT_MODE"], os.environ["BENCH_DS"], os.environ.get("BENCH_MANIFEST", ""))
warm_up = module.warm_up_dag()
"""


def prepare_airflow() -> Path:
    """Airflow settings for the bench (its own home and DAG folder); the metadata DB is migrated once."""
    home = Path(os.environ.setdefault("AIRFLOW_HOME", str(REPO / ".data" / "bench" / "airflow")))
    dags = home / "dags"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    dags.mkdir(parents=True, exist_ok=True)
    dag_file = dags / "bench_dbt.py"
    dag_file.write_text(DAG_FILE.format(module=str(Path(__file__).resolve())))
    if not (home / "airflow.db").exists():
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)
    return dag_file


def warm_up_dag() -> Any:
    """One no-op task, run before the timed DAG: `dag.test()` starts its in-process execution API on
    the first task it runs (5-8 s here), a one-off a running deployment does not pay per run; without
    this the timed DAG's first task would carry it, in both modes alike."""
    from airflow.sdk import DAG, task

    @task
    def warm_up() -> None:
        return None

    with DAG(dag_id="bench_dbt_warm_up", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC)) as dag:
        warm_up()
    return dag


def build_dag(mode: str, ds: str, manifest: str) -> Any:
    return layers_dag() if mode == "layers" else cosmos_dag(date.fromisoformat(ds), Path(manifest))


def layers_dag() -> Any:
    from airflow.sdk import DAG, chain

    from ml_pipeline_lib import stages
    from ml_pipeline_lib.runners import get_runner

    runner = get_runner()
    with DAG(dag_id="bench_dbt_layers", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC), params=PARAMS) as dag:
        chain(*(runner.operator(spec) for spec in (stages.DBT_STAGING, stages.DBT_INTERMEDIATE, stages.DBT_MARTS)))
    return dag


def cosmos_dag(ds: date, manifest: Path) -> Any:
    import airflow  # noqa: F401  (before cosmos: it imports Airflow's internals)
    from cosmos import DbtDag, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
    from cosmos.constants import ExecutionMode, InvocationMode, LoadMode, TestBehavior

    project = REPO / "dbt"
    return DbtDag(
        dag_id="bench_dbt_cosmos",
        schedule=None,
        start_date=datetime(2024, 1, 1, tzinfo=UTC),
        project_config=ProjectConfig(
            dbt_project_path=project,
            manifest_path=manifest,
            install_dbt_deps=False,  # no packages (and no dbt hub here)
            # the date as dbt-stage hands it over (read at execution: a new date keeps the parse);
            # dbt_vars={"as_of_date": ...} works too, but makes the first task parse the whole project
            env_vars={"PIPELINE_AS_OF_DATE": ds.isoformat()},
        ),
        profile_config=ProfileConfig(profile_name="churn", target_name="warehouse", profiles_yml_filepath=project / "profiles.yml"),
        execution_config=ExecutionConfig(
            execution_mode=ExecutionMode.LOCAL,
            invocation_mode=InvocationMode.SUBPROCESS,  # dbt lives in its own environment, as in ours
            dbt_executable_path=str(project / ".venv" / "bin" / "dbt"),
        ),
        # BUILD (default here): one task per model; cosmos's own default, AFTER_EACH, renders a run task
        # and a test task per model (BENCH_COSMOS_TEST_BEHAVIOR=after_each)
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST, test_behavior=TestBehavior(os.environ.get("BENCH_COSMOS_TEST_BEHAVIOR", "build"))
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("mode", choices=["layers", "cosmos"])
    parser.add_argument("--ds", type=date.fromisoformat, required=True)
    parser.add_argument("--manifest", type=Path, help="dbt manifest.json (cosmos)")
    args = parser.parse_args()
    os.environ.update({"PIPELINE_RUNNER": "local", "BENCH_DBT_MODE": args.mode, "BENCH_DS": args.ds.isoformat()})
    os.environ["BENCH_MANIFEST"] = str(args.manifest or "")
    dag_file = prepare_airflow()
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_bench_{dag_file.stem}", dag_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.dag
    module.warm_up.test()
    started = time.perf_counter()
    run = dag.test(logical_date=datetime(args.ds.year, args.ds.month, args.ds.day, tzinfo=UTC))
    seconds = time.perf_counter() - started
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == run.run_id).all()
        states = Counter(str(ti.state) for ti in tis)
        starts = [ti.start_date for ti in tis if ti.start_date]
        ends = [ti.end_date for ti in tis if ti.end_date]
        run_seconds = (max(ends) - min(starts)).total_seconds() if starts and ends else seconds
        ran = sorted((ti for ti in tis if ti.start_date and ti.end_date), key=lambda ti: ti.start_date)
        task_seconds = {ti.task_id: round((ti.end_date - ti.start_date).total_seconds(), 3) for ti in ran}
        operators = Counter(type(task).__name__ for task in dag.tasks)
    result = {
        "mode": args.mode,
        "state": str(run.state),
        "run_seconds": round(run_seconds, 3),
        "dag_test_seconds": round(seconds, 3),
        "tasks": len(dag.tasks),
        "task_seconds": task_seconds,
        "operators": dict(operators),
        "states": dict(states),
    }
    Path(os.environ["PIPELINE_RESULT_PATH"]).write_text(json.dumps(result))
    if str(run.state) != "success":
        raise SystemExit(f"{dag.dag_id}: run ended {run.state}: {dict(states)}")


if __name__ == "__main__":
    main()

"""Run the ml_pipeline DAG with `dag.test()` for one or more logical dates and print what happened.

    uv run --project dags python -m ml_pipeline_lib.demo 2024-06-01 2024-06-02 2024-06-03

(from `dags/`, or with `dags/` on PYTHONPATH). Not imported by the DAG. Before importing Airflow it
sets defaults for the environment it needs: `AIRFLOW_HOME=<repo>/.airflow` (git-ignored, sqlite
metadata DB, migrated on first use), `AIRFLOW__CORE__LOAD_EXAMPLES=False`, the DAG folder
`<repo>/dags`, and `PIPELINE_RUNNER=local`. The warehouse is whatever the PG* variables point at
(`make warehouse` then `source .warehouse/env`); `PIPELINE_LANDING_DIR` / `PIPELINE_REPORTS_DIR`
default to `<repo>/.data/landing` and `<repo>/reports`.

Exit status: 0 when every run succeeded, 1 otherwise. `--json` prints the summaries as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_FILE = REPO_ROOT / "dags" / "ml_pipeline.py"


def airflow_environment(repo_root: Path = REPO_ROOT) -> dict[str, str]:
    """The Airflow settings the demo and the DAG tests use, unless already set by the caller."""
    return {
        "AIRFLOW_HOME": str(repo_root / ".airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(repo_root / "dags"),
    }


def prepare_airflow(environ: dict[str, str] | None = None) -> None:
    """Apply the defaults to os.environ and migrate the metadata DB when it does not exist yet."""
    for key, value in (environ or airflow_environment()).items():
        os.environ.setdefault(key, value)
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "airflow.db").exists() or os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)


def load_dag(dag_file: Path = DAG_FILE) -> Any:
    """Import the DAG file (its folder on sys.path, as Airflow's DAG processor does)."""
    import importlib.util

    sys.path.insert(0, str(dag_file.parent))
    spec = importlib.util.spec_from_file_location(f"_demo_{dag_file.stem}", dag_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def summarise_run(dag_id: str, run_id: str) -> dict[str, Any]:
    """Per task instance: state, tries, seconds, and its XCom result; read from the metadata DB."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id).all()
        xcoms = (
            session.query(XComModel).filter(XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.key == "return_value").all()
        )
        values = {(x.task_id, x.map_index): XComModel.deserialize_value(x) for x in xcoms}
        tasks: dict[str, Any] = {}
        for ti in sorted(tis, key=lambda t: (t.start_date or datetime.max.replace(tzinfo=UTC), t.task_id, t.map_index)):
            key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
            seconds = (ti.end_date - ti.start_date).total_seconds() if ti.start_date and ti.end_date else None
            tasks[key] = {
                "state": str(ti.state),
                "try_number": ti.try_number,
                "seconds": round(seconds, 2) if seconds is not None else None,
                "result": values.get((ti.task_id, ti.map_index)),
            }
    return {"dag_id": dag_id, "run_id": run_id, "tasks": tasks}


def run_dates(dates: list[date], dag: Any | None = None, conf: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """`dag.test()` once per logical date, in order; a summary per run."""
    dag = dag or load_dag()
    summaries = []
    for day in dates:
        run = dag.test(logical_date=datetime(day.year, day.month, day.day, tzinfo=UTC), run_conf=conf)
        summary = summarise_run(dag.dag_id, run.run_id)
        summary.update({"logical_date": day.isoformat(), "state": str(run.state)})
        summaries.append(summary)
    return summaries


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"== {summary['dag_id']} {summary['logical_date']}: {summary['state']} ({summary['run_id']})"]
    for task_key, task in summary["tasks"].items():
        seconds = f"{task['seconds']:7.1f}s" if task["seconds"] is not None else "      -"
        result = json.dumps(task["result"], default=str, sort_keys=True) if task["result"] is not None else ""
        if len(result) > 110:
            result = result[:107] + "..."
        lines.append(f"  {task_key:<26} {task['state']:<16} {seconds}  try {task['try_number']}  {result}")
    return "\n".join(lines)


def warehouse_summary(as_of_date: date) -> str:
    """What a person wants after a run: counts, the model and its gate decisions, the riskiest customers."""
    import psycopg

    lines = [f"== warehouse after {as_of_date}"]
    with psycopg.connect("") as conn:

        def one(query: str, *params: Any) -> Any:
            row = conn.execute(query, params).fetchone()
            return None if row is None else row[0]

        def exists(name: str) -> bool:
            return bool(one("select to_regclass(%s) is not null", name))

        counts = [
            ("raw transactions", "raw.transactions", "select count(*) from raw.transactions"),
            (
                f"feature rows on {as_of_date}",
                "marts.customer_churn_features",
                "select count(*) from marts.customer_churn_features where as_of_date = %s",
            ),
            ("training snapshots", "marts.customer_churn_training_set", "select count(*) from marts.customer_churn_training_set"),
            (f"predictions on {as_of_date}", "ml.churn_predictions", "select count(*) from ml.churn_predictions where as_of_date = %s"),
        ]
        for label, table, query in counts:
            value = one(query, *([as_of_date] if "%s" in query else [])) if exists(table) else None
            lines.append(f"  {label:<32} {value:>12,}" if value is not None else f"  {label:<32} {'-':>12}")
        if exists("ml.model_promotions"):
            lines.append("  model versions and gate decisions:")
            for version, as_of, promoted, reason, auc, base_auc, report in conn.execute(
                """
                select p.version, v.as_of_date, p.promoted, p.reason,
                    (v.metrics -> 'holdout' -> 'candidate' ->> 'roc_auc')::float,
                    (v.metrics -> 'holdout' -> 'baseline' ->> 'roc_auc')::float, v.report_path
                from ml.model_promotions as p
                inner join ml.model_versions as v using (model_name, version)
                order by p.decided_at
                """
            ).fetchall():
                verdict = "promoted" if promoted else "kept champion"
                lines.append(f"    v{version} (trained for {as_of}): ROC AUC {auc:.3f} vs baseline {base_auc:.3f}; {verdict}: {reason}")
                lines.append(f"        report: {report}")
            champion = one("select version from ml.model_champion where model_name = 'churn'")
            lines.append(f"  champion: v{champion}")
        if exists("ml.churn_predictions"):
            top = conn.execute(
                """
                select customer_id, churn_probability, risk_band from ml.churn_predictions
                where as_of_date = %s order by churn_probability desc, customer_id limit 10
                """,
                (as_of_date,),
            ).fetchall()
            bands: dict[str, int] = dict(
                conn.execute(
                    "select risk_band, count(*) from ml.churn_predictions where as_of_date = %s group by 1", (as_of_date,)
                ).fetchall()
            )
            lines.append(f"  risk bands on {as_of_date}: " + ", ".join(f"{b} {bands.get(b, 0):,}" for b in ("high", "medium", "low")))
            lines.append("  top 10 customers most likely to churn:")
            lines.extend(f"    {customer:<12} {probability:6.3f}  {band}" for customer, probability, band in top)
    return "\n".join(lines)


@contextlib.contextmanager
def output_to(path: Path | None) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors, so subprocesses too) to `path`."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("dates", nargs="+", type=date.fromisoformat, help="logical dates YYYY-MM-DD, run in order")
    parser.add_argument("--conf", type=json.loads, default=None, help="DAG params as JSON, e.g. '{\"shard_count\": 2}'")
    parser.add_argument("--json", action="store_true", help="print the summaries as JSON")
    parser.add_argument(
        "--task-log", type=Path, default=None, help="write Airflow's and the stages' own output here instead of the terminal"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("PIPELINE_RUNNER", "local")
    if args.task_log:
        print(f"(task logs: {args.task_log})", flush=True)
    with output_to(args.task_log):
        prepare_airflow()
        summaries = run_dates(args.dates, conf=args.conf)
    if args.json:
        print(json.dumps(summaries, default=str, indent=2))
    else:
        for summary in summaries:
            print(format_summary(summary))
        print(warehouse_summary(args.dates[-1]))
    return 0 if all(s["state"] == "success" for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())

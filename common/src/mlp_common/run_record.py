"""The run record: one row in `ml.pipeline_runs` per Airflow DAG run, linking what the run produced.

`run-record --ds D --run-id R --stages-json JSON` runs as the pipeline's last stage (in the
predictor image, which installs this package). JSON is what the DAG collected from the stages'
XComs: `{stage: {"result": {...}, "timing": {...}, "ran": bool}, "predict": {"shards": [...]}}`.
From it the record keeps the dbt invocation ids (`invocation_id` of the dbt stages' results), the
model version that scored (`model_version` of the prediction results), the version trained and
whether it was promoted (`version`/`model_version` and `promoted` of the training result), the
prediction batch ids (`batch_id`; else read from `ml.prediction_batches` for D),
per-stage timings, and per-stage counts (the numeric fields of each result). Re-running the
record for the same run id replaces its row: idempotent per DAG run.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated, Any

import typer
from psycopg.types.json import Jsonb

from mlp_common.cli import run_app
from mlp_common.exit_codes import ExitCode, StageError
from mlp_common.logs import get_logger, set_context
from mlp_common.results import write_result
from mlp_common.warehouse import connect, lock_for_transaction

STAGE = "run-record"
DBT_STAGE_PREFIXES = ("dbt_", "freshness")

DDL = """
create schema if not exists ml;
create table if not exists ml.pipeline_runs (
    run_id text primary key,
    as_of_date date not null,
    recorded_at timestamptz not null default now(),
    trained boolean not null,
    promoted boolean,
    model_version bigint,
    trained_model_version bigint,
    dbt_invocation_ids jsonb not null,
    prediction_batch_ids jsonb not null,
    stage_timings jsonb not null,
    stage_counts jsonb not null,
    stages jsonb not null
);
"""

UPSERT = """
insert into ml.pipeline_runs (run_id, as_of_date, trained, promoted, model_version, trained_model_version,
    dbt_invocation_ids, prediction_batch_ids, stage_timings, stage_counts, stages)
values (%(run_id)s, %(as_of_date)s, %(trained)s, %(promoted)s, %(model_version)s, %(trained_model_version)s,
    %(dbt_invocation_ids)s, %(prediction_batch_ids)s, %(stage_timings)s, %(stage_counts)s, %(stages)s)
on conflict (run_id) do update set
    as_of_date = excluded.as_of_date, recorded_at = now(), trained = excluded.trained, promoted = excluded.promoted,
    model_version = excluded.model_version, trained_model_version = excluded.trained_model_version,
    dbt_invocation_ids = excluded.dbt_invocation_ids, prediction_batch_ids = excluded.prediction_batch_ids,
    stage_timings = excluded.stage_timings, stage_counts = excluded.stage_counts, stages = excluded.stages
"""

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, help="Write the run record of one DAG run to ml.pipeline_runs.")


def _entries(stage: dict[str, Any]) -> list[dict[str, Any]]:
    """A stage's (result, timing) entries: one for a plain task, one per shard for a mapped one."""
    if isinstance(stage.get("shards"), list):
        return [s for s in stage["shards"] if isinstance(s, dict)]
    return [stage]


def _counts(result: Any) -> dict[str, Any]:
    if not isinstance(result, dict):
        return {}
    return {k: v for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def summarise(stages: dict[str, Any]) -> dict[str, Any]:
    """The record's columns from the collected stage results (pure: tested without a warehouse)."""
    invocations: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    counts: dict[str, Any] = {}
    batch_ids: list[str] = []
    scored_versions: set[int] = set()
    for name, stage in stages.items():
        if not isinstance(stage, dict):
            raise StageError(f"--stages-json: stage {name!r} must be an object", ExitCode.BAD_ARGUMENT)
        entries = _entries(stage)
        seconds = [e["timing"]["seconds"] for e in entries if isinstance(e.get("timing"), dict) and "seconds" in e["timing"]]
        timings[name] = (seconds[0] if len(seconds) == 1 and "shards" not in stage else seconds) if seconds else None
        stage_counts = [_counts(e.get("result")) for e in entries]
        counts[name] = stage_counts if "shards" in stage else (stage_counts[0] if stage_counts else {})
        for entry in entries:
            result = entry.get("result")
            if not isinstance(result, dict):
                continue
            if name.startswith(DBT_STAGE_PREFIXES) and result.get("invocation_id"):
                invocations[name] = result["invocation_id"]
            if name == "predict":
                if result.get("batch_id"):
                    batch_ids.append(str(result["batch_id"]))
                if isinstance(result.get("model_version"), int):
                    scored_versions.add(result["model_version"])
    train: dict[str, Any] = stages["train"] if isinstance(stages.get("train"), dict) else {}
    train_result: dict[str, Any] = train["result"] if isinstance(train.get("result"), dict) else {}
    trained = bool(train.get("ran")) and bool(train_result)
    trained_version = next((train_result[k] for k in ("model_version", "version") if isinstance(train_result.get(k), int)), None)
    promoted = train_result.get("promoted") if isinstance(train_result.get("promoted"), bool) else None
    if len(scored_versions) > 1:
        raise StageError(f"prediction shards used different model versions {sorted(scored_versions)}", ExitCode.DATA_QUALITY)
    return {
        "trained": trained,
        "promoted": promoted,
        "model_version": next(iter(scored_versions), None),
        "trained_model_version": trained_version,
        "dbt_invocation_ids": invocations,
        "prediction_batch_ids": batch_ids,
        "stage_timings": timings,
        "stage_counts": counts,
    }


def _batches_from_warehouse(conn: Any, as_of_date: date) -> tuple[list[str], int | None]:
    """Batch ids and model version of D's prediction batches, when the results did not carry them."""
    exists = conn.execute("select to_regclass('ml.prediction_batches') is not null").fetchone()[0]
    if not exists:
        return [], None
    rows = conn.execute(
        "select batch_id::text, model_version from ml.prediction_batches where as_of_date = %s order by shard", (as_of_date,)
    ).fetchall()
    versions = {r[1] for r in rows}
    return [r[0] for r in rows], (versions.pop() if len(versions) == 1 else None)


def record(as_of_date: date, run_id: str, stages: dict[str, Any]) -> dict[str, Any]:
    """Write (or replace) the run's row in one transaction; return what was written."""
    row = summarise(stages)
    with connect(STAGE) as conn, conn.transaction():
        lock_for_transaction(conn, "ml.pipeline_runs", "ddl")  # `create ... if not exists` races with itself
        conn.execute(DDL)
        lock_for_transaction(conn, "ml.pipeline_runs", run_id)
        if not row["prediction_batch_ids"]:
            batch_ids, version = _batches_from_warehouse(conn, as_of_date)
            row["prediction_batch_ids"] = batch_ids
            row["model_version"] = row["model_version"] if row["model_version"] is not None else version
        params = {
            "run_id": run_id,
            "as_of_date": as_of_date,
            **{k: Jsonb(v) if isinstance(v, dict | list) else v for k, v in row.items()},
            "stages": Jsonb(stages),
        }
        conn.execute(UPSERT, params)
    return {"run_id": run_id, "as_of_date": as_of_date.isoformat(), **row}


@app.command()
def main_command(
    ds: Annotated[str, typer.Option("--ds", help="logical date YYYY-MM-DD")],
    run_id: Annotated[str, typer.Option("--run-id", help="the Airflow DAG run id")],
    stages_json: Annotated[str, typer.Option("--stages-json", help="per-stage results and timings collected by the DAG (JSON object)")],
) -> None:
    """Write the run record of one DAG run to ml.pipeline_runs (replacing a previous one for the same run id)."""
    try:
        as_of_date = date.fromisoformat(ds)
    except ValueError:
        raise StageError(f"--ds {ds!r} is not a date (YYYY-MM-DD)", ExitCode.BAD_ARGUMENT) from None
    set_context(ds=ds, run_id=run_id)
    if not run_id.strip():
        raise StageError("--run-id must not be empty", ExitCode.BAD_ARGUMENT)
    try:
        stages = json.loads(stages_json)
    except json.JSONDecodeError as exc:
        raise StageError(f"--stages-json is not valid JSON: {exc}", ExitCode.BAD_ARGUMENT) from None
    if not isinstance(stages, dict):
        raise StageError("--stages-json must be a JSON object keyed by stage name", ExitCode.BAD_ARGUMENT)
    written = record(as_of_date, run_id, stages)
    get_logger(STAGE).info(
        "run recorded", extra={"fields": {"model_version": written["model_version"], "batches": len(written["prediction_batch_ids"])}}
    )
    write_result(
        {
            k: written[k]
            for k in ("run_id", "as_of_date", "trained", "promoted", "model_version", "trained_model_version", "prediction_batch_ids")
        }
    )


def main() -> None:
    run_app(app, STAGE)


if __name__ == "__main__":
    main()

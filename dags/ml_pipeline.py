"""
# ml_pipeline: daily churn scoring

For the logical date `D` (`{{ ds }}`), each task a stage of the pipeline, its command line the
same whatever launches it (`PIPELINE_RUNNER=local|docker|kubernetes`, default `local`):

1. **freshness**: `dbt-stage freshness`, the raw sources are recent enough;
2. **ingest**: `ingest load`, the day's raw files into `raw.*`;
3. **dbt_staging → dbt_intermediate → dbt_marts**: `dbt-stage build --layer X` (models *and*
   tests: a failing data test stops the run before training);
4. **retrain_due → choose_training**: `trainer due` decides (no champion, cadence reached, drift
   flagged by the last prediction batch); **train** fits, evaluates, registers, promotes if better;
5. **predict**: `predictor predict --shard I/N --model-version V`, N parallel shards (dynamic task
   mapping), all pinned to the champion the run decided on, run whether or not training ran;
6. **run_record**: one row in `ml.pipeline_runs` linking this run, the dbt invocations, the model
   version and the prediction batches, with per-stage timings and counts.

Failures: infrastructure errors retry with exponential backoff; bad input and failed quality
gates (non-retryable exit codes) fail at once. Every failed task logs a structured event and,
when `PIPELINE_ALERT_WEBHOOK` is set, posts it there. See `docs/dags.md`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Param, TriggerRule, chain, task

from ml_pipeline_lib import stages
from ml_pipeline_lib.callbacks import on_task_failure
from ml_pipeline_lib.constants import TIMING_XCOM_KEY
from ml_pipeline_lib.runners import get_runner

runner = get_runner()

with DAG(
    dag_id="ml_pipeline",
    description="Daily churn pipeline: ingest, dbt features, retrain when due, sharded scoring, run record",
    doc_md=__doc__,
    schedule="@daily",
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,  # history is backfilled on purpose (`airflow backfill create`), never by accident
    max_active_runs=1,  # a date's training and scoring depend on the champion left by the previous date
    dagrun_timeout=timedelta(hours=6),
    default_args={"owner": "ml-pipeline", "on_failure_callback": on_task_failure},
    params={
        "auc_floor": Param(
            0.6, type="number", minimum=0.5, maximum=1.0, description="a new model below this holdout AUC is never promoted"
        ),
        "promotion_tolerance": Param(
            0.0, type="number", minimum=0.0, maximum=0.1, description="how much worse than the champion a candidate may be"
        ),
        "shard_count": Param(2, type="integer", minimum=1, maximum=32, description="parallel prediction shards"),
        "retrain_cadence_days": Param(7, type="integer", minimum=1, description="retrain when the champion is older than this"),
    },
    tags=["ml-pipeline", "churn", f"runner:{runner.mode}"],
) as dag:
    freshness = runner.operator(stages.FRESHNESS)
    ingest = runner.operator(stages.INGEST)
    dbt_staging = runner.operator(stages.DBT_STAGING)
    dbt_intermediate = runner.operator(stages.DBT_INTERMEDIATE)
    dbt_marts = runner.operator(stages.DBT_MARTS)
    retrain_due = runner.operator(stages.RETRAIN_DUE)

    @task.branch
    def choose_training(ti=None) -> str:
        """Train when `trainer due` said so; its result JSON is `{"due": bool, "reason": ...}`."""
        decision = ti.xcom_pull(task_ids=stages.RETRAIN_DUE.name) or {}
        print(f"retrain due: {decision.get('due')} ({decision.get('reason')})")
        return stages.TRAIN.name if decision.get("due") else "skip_training"

    train = runner.operator(stages.TRAIN)
    skip_training = EmptyOperator(task_id="skip_training")

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def shard_arguments(ds=None, params=None, ti=None) -> list[list[str]]:
        """One predictor command line per shard, all pinned to one model version; runs whether
        training ran or was skipped."""
        version = stages.scoring_version(ti.xcom_pull(task_ids=stages.RETRAIN_DUE.name), ti.xcom_pull(task_ids=stages.TRAIN.name))
        print(f"scoring with model version {version if version is not None else 'of the champion'}")
        return stages.shard_argvs(ds, int(params["shard_count"]), version)

    shards = shard_arguments()
    predict = runner.mapped_operator(stages.PREDICT, shards)

    @task
    def collect_stage_results(ti=None) -> str:
        """Per-stage results and timings (XComs) as one JSON document for the run record."""
        collected: dict[str, Any] = {}
        for name in stages.RECORDED_STAGES:
            results = ti.xcom_pull(task_ids=name)
            timings = ti.xcom_pull(task_ids=name, key=TIMING_XCOM_KEY)
            if name == stages.PREDICT.name:
                results = results if isinstance(results, list) else [results]
                timings = timings if isinstance(timings, list) else [timings]
                collected[name] = {"shards": [{"result": r, "timing": t} for r, t in zip(results, timings, strict=False)]}
            else:
                collected[name] = {"result": results, "timing": timings, "ran": timings is not None}
        return json.dumps(collected, sort_keys=True, default=str)

    run_record = runner.operator(stages.RUN_RECORD)
    collected = collect_stage_results()

    chain(freshness, ingest, dbt_staging, dbt_intermediate, dbt_marts, retrain_due, choose_training(), [train, skip_training])
    chain([train, skip_training], shards)
    chain(predict, collected, run_record)

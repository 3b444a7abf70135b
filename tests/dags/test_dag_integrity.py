"""The DAG imports cleanly with every runner, and its shape is the pipeline's (issue 6, points 1 and 3)."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from dag_helpers import load_dag

from ml_pipeline_lib.stages import STAGES

RUNNERS = ("local", "docker", "kubernetes")
LINEAR = ("freshness", "ingest", "dbt_staging", "dbt_intermediate", "dbt_marts", "retrain_due", "choose_training")


@pytest.fixture(scope="module")
def dag():
    with pytest.MonkeyPatch.context() as mp:
        yield load_dag("local", mp)


@pytest.mark.parametrize("runner", RUNNERS)
def test_dagbag_imports_without_errors(runner: str, monkeypatch: pytest.MonkeyPatch) -> None:
    dag = load_dag(runner, monkeypatch)
    assert f"runner:{runner}" in dag.tags
    assert len(dag.tasks) == 13


def test_unknown_runner_is_an_import_error_that_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from dag_helpers import DAG_FILE

    monkeypatch.setenv("PIPELINE_RUNNER", "nomad")
    bag = DagBag(dag_folder=str(DAG_FILE))
    [error] = bag.import_errors.values()
    assert "PIPELINE_RUNNER='nomad': choose one of local|docker|kubernetes" in error


def test_latest_image_tag_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from dag_helpers import DAG_FILE

    monkeypatch.setenv("PIPELINE_RUNNER", "kubernetes")
    monkeypatch.setenv("PIPELINE_IMAGE_TAG", "latest")
    bag = DagBag(dag_folder=str(DAG_FILE))
    [error] = bag.import_errors.values()
    assert "must be pinned" in error


def test_dag_settings(dag) -> None:
    assert dag.doc_md and "ml_pipeline" in dag.doc_md
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.schedule == "@daily"
    assert dag.start_date.year == 2024 and dag.start_date.tzinfo is not None
    assert {"ml-pipeline", "churn"} <= set(dag.tags)
    assert set(dag.params) == {"auc_floor", "promotion_tolerance", "shard_count", "retrain_cadence_days"}
    assert dag.params["shard_count"] == 2


def test_linear_head_of_the_pipeline(dag) -> None:
    for upstream, downstream in itertools.pairwise(LINEAR):
        assert dag.get_task(downstream).upstream_task_ids == {upstream}, downstream
    assert dag.get_task("freshness").upstream_task_ids == set()


def test_training_branch_and_prediction_shards(dag) -> None:
    assert dag.get_task("choose_training").downstream_task_ids == {"train", "skip_training"}
    shards = dag.get_task("shard_arguments")
    assert shards.upstream_task_ids == {"train", "skip_training"}
    # prediction runs whether training ran or was skipped, never after a failure
    assert shards.trigger_rule == "none_failed_min_one_success"
    predict = dag.get_task("predict")
    assert predict.is_mapped if hasattr(predict, "is_mapped") else type(predict).__name__ == "MappedOperator"
    assert predict.upstream_task_ids == {"shard_arguments"}
    assert dag.get_task("collect_stage_results").upstream_task_ids == {"predict"}
    assert dag.get_task("run_record").upstream_task_ids == {"collect_stage_results"}
    assert dag.get_task("run_record").downstream_task_ids == set()


def test_every_stage_is_a_task_with_backoff_and_the_failure_callback(dag) -> None:
    for name, spec in STAGES.items():
        task = dag.get_task(name)
        retries = task.partial_kwargs["retries"] if name == "predict" else task.retries
        assert retries == spec.retry.retries >= 1, name
        if name != "predict":
            assert task.retry_exponential_backoff == spec.retry.backoff > 1
            assert task.max_retry_delay == spec.retry.max_delay <= timedelta(minutes=10)
            assert task.on_failure_callback, name


def test_shard_arguments_builds_one_concrete_command_line_per_shard(dag) -> None:
    from ml_pipeline_lib.stages import PREDICT, shard_label

    argvs = [PREDICT.argv(ds="2024-03-01", shard=shard_label(i, 3)) for i in range(3)]
    assert argvs[2] == ["predictor", "predict", "--ds", "2024-03-01", "--shard", "2/3"]
    with pytest.raises(ValueError):
        shard_label(3, 3)


def test_every_shard_of_a_run_is_pinned_to_the_model_version_the_run_decided() -> None:
    from ml_pipeline_lib.stages import scoring_version, shard_argvs

    trained = {"due": True, "champion_version": 3}
    # training ran: the champion it left, whether it promoted its candidate (4) or kept 3
    assert scoring_version(trained, {"version": 4, "promoted": True, "champion_after": 4}) == 4
    assert scoring_version(trained, {"version": 4, "promoted": False, "champion_after": 3}) == 3
    # training skipped: the champion `trainer due` saw, never a stale train result of an earlier try
    assert scoring_version({"due": False, "champion_version": 3}, {"champion_after": 9}) == 3
    # nothing names a version (no XCom, a malformed result): the predictor falls back to the champion
    assert scoring_version(None, None) is None
    assert scoring_version({"due": False, "champion_version": True}, None) is None
    argvs = shard_argvs("2024-03-01", 2, 4)
    assert argvs == [
        ["predictor", "predict", "--ds", "2024-03-01", "--shard", "0/2", "--model-version", "4"],
        ["predictor", "predict", "--ds", "2024-03-01", "--shard", "1/2", "--model-version", "4"],
    ]
    assert shard_argvs("2024-03-01", 1, None) == [["predictor", "predict", "--ds", "2024-03-01", "--shard", "0/1"]]

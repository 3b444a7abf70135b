"""The run record stage (`run-record`, mlp_common.run_record) on a real PostgreSQL: one row per DAG run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlp_common.exit_codes import ExitCode, StageError
from mlp_common.run_record import summarise

RUN_RECORD = str(Path(sys.executable).with_name("run-record"))


def timing(seconds: float) -> dict:
    return {"seconds": seconds, "started_at": "2024-03-01T00:00:00+00:00", "ended_at": "2024-03-01T00:00:01+00:00", "exit_code": 0}


def collected(trained: bool = True, versions: tuple[int, int] = (3, 3), with_batches: bool = True) -> dict:
    """What the DAG's collect_stage_results task hands to the run record."""

    def shard(i: int) -> dict:
        result = {"rows": 10 + i, "model_version": versions[i], "shard": i}
        if with_batches:
            result["batch_id"] = f"00000000-0000-0000-0000-00000000000{i}"
        return {"result": result, "timing": timing(2.0 + i)}

    return {
        "freshness": {"result": {"invocation_id": "inv-fresh"}, "timing": timing(1.0), "ran": True},
        "ingest": {"result": {"rows_loaded": 120, "rows_rejected": 3, "batch_id": "b"}, "timing": timing(1.5), "ran": True},
        "dbt_staging": {"result": {"invocation_id": "inv-stg"}, "timing": timing(4.0), "ran": True},
        "dbt_intermediate": {"result": {"invocation_id": "inv-int"}, "timing": timing(4.0), "ran": True},
        "dbt_marts": {"result": {"invocation_id": "inv-marts"}, "timing": timing(5.0), "ran": True},
        "retrain_due": {"result": {"due": trained, "reason": "no champion"}, "timing": timing(0.5), "ran": True},
        "train": {"result": {"version": 3, "promoted": True, "auc": 0.71}, "timing": timing(9.0), "ran": True}
        if trained
        else {"result": None, "timing": None, "ran": False},
        "predict": {"shards": [shard(0), shard(1)]},
    }


def test_summary_links_dbt_invocations_model_version_batches_timings_and_counts() -> None:
    row = summarise(collected())
    assert row["dbt_invocation_ids"] == {
        "freshness": "inv-fresh",
        "dbt_staging": "inv-stg",
        "dbt_intermediate": "inv-int",
        "dbt_marts": "inv-marts",
    }
    assert row["model_version"] == 3 and row["trained_model_version"] == 3 and row["trained"] is True and row["promoted"] is True
    assert row["prediction_batch_ids"] == ["00000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000001"]
    assert row["stage_timings"]["ingest"] == 1.5 and row["stage_timings"]["predict"] == [2.0, 3.0]
    assert row["stage_counts"]["ingest"] == {"rows_loaded": 120, "rows_rejected": 3}
    assert row["stage_counts"]["predict"][1]["rows"] == 11
    skipped = summarise(collected(trained=False))
    assert (
        skipped["trained"] is False
        and skipped["trained_model_version"] is None
        and skipped["promoted"] is None
        and skipped["stage_timings"]["train"] is None
    )


def test_shards_scored_by_different_models_are_refused() -> None:
    with pytest.raises(StageError) as err:
        summarise(collected(versions=(3, 4)))
    assert err.value.code == ExitCode.DATA_QUALITY


def run_record(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RUN_RECORD, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.integration
def test_cli_writes_one_row_per_dag_run_idempotently(db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_RESULT_PATH", str(tmp_path / "result.json"))
    args = ["--ds", "2024-03-01", "--run-id", "scheduled__2024-03-01T00:00:00+00:00"]
    first = run_record(*args, "--stages-json", json.dumps(collected()))
    assert first.returncode == 0, first.stderr
    again = run_record(*args, "--stages-json", json.dumps(collected(trained=False)))
    assert again.returncode == 0, again.stderr
    rows = db.execute(
        "select run_id, as_of_date::text, trained, model_version, dbt_invocation_ids, prediction_batch_ids from ml.pipeline_runs"
    ).fetchall()
    assert len(rows) == 1  # replaced, not appended
    run_id, as_of, trained, version, invocations, batches = rows[0]
    assert (run_id, as_of, trained, version) == ("scheduled__2024-03-01T00:00:00+00:00", "2024-03-01", False, 3)
    assert invocations["dbt_marts"] == "inv-marts" and len(batches) == 2
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["run_id"] == run_id and result["model_version"] == 3
    other = run_record("--ds", "2024-03-02", "--run-id", "scheduled__2024-03-02T00:00:00+00:00", "--stages-json", json.dumps(collected()))
    assert other.returncode == 0, other.stderr
    assert db.execute("select count(*) from ml.pipeline_runs").fetchone()[0] == 2


@pytest.mark.integration
def test_batch_ids_fall_back_to_the_warehouse(db) -> None:
    db.execute(
        """create schema ml; create table ml.prediction_batches (batch_id uuid, as_of_date date, model_version bigint, shard int,
           shard_count int, rows bigint, quantiles jsonb, psi double precision, drift boolean, created_at timestamptz default now())"""
    )
    db.execute(
        "insert into ml.prediction_batches (batch_id, as_of_date, model_version, shard, shard_count, rows) values"
        " ('11111111-1111-1111-1111-111111111111', '2024-03-01', 5, 0, 1, 40),"
        " ('22222222-2222-2222-2222-222222222222', '2024-02-29', 4, 0, 1, 40)"
    )
    stages = collected(with_batches=False)
    for shard in stages["predict"]["shards"]:
        del shard["result"]["model_version"]
    proc = run_record("--ds", "2024-03-01", "--run-id", "r1", "--stages-json", json.dumps(stages))
    assert proc.returncode == 0, proc.stderr
    batches, version = db.execute("select prediction_batch_ids, model_version from ml.pipeline_runs").fetchone()
    assert batches == ["11111111-1111-1111-1111-111111111111"] and version == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ds", "2024-02-30", "--run-id", "r", "--stages-json", "{}"], "is not a date"),
        (["--ds", "2024-03-01", "--run-id", "r", "--stages-json", "{not json"], "is not valid JSON"),
        (["--ds", "2024-03-01", "--run-id", "r", "--stages-json", "[]"], "must be a JSON object"),
        (["--ds", "2024-03-01", "--run-id", " ", "--stages-json", "{}"], "--run-id must not be empty"),
    ],
)
def test_bad_arguments_exit_with_one_line_and_a_distinct_code(args: list[str], message: str) -> None:
    proc = run_record(*args)
    assert proc.returncode == ExitCode.BAD_ARGUMENT
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("run-record: error:") and message in line

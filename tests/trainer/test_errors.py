"""Each bad input ends in one stderr line and its own exit code (the CLI in a subprocess, as the DAG runs it)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pyarrow as pa
import pytest

from mlp_common.exit_codes import ExitCode
from tests.trainer.trainer_helpers import DS, champion_version, load_synthetic, run_cli
from trainer.synthetic import COLUMNS, load_training_set, make_training_set

pytestmark = pytest.mark.integration


def _train(tmp_path: Path, *extra: str, ds: str = str(DS)) -> object:
    return run_cli("train", "--ds", ds, "--auc-floor", "0.6", "--tolerance", "0.0", *extra, tmp_path=tmp_path)


def _assert_one_line(run: object, code: int, *words: str) -> None:
    assert run.code == code, (run.code, run.stderr)  # type: ignore[attr-defined]
    lines = run.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1, run.stderr  # type: ignore[attr-defined]
    assert lines[0].startswith("trainer: error: ")
    for word in words:
        assert word in lines[0]


def test_missing_table(db: psycopg.Connection, tmp_path: Path) -> None:
    _assert_one_line(_train(tmp_path), ExitCode.EMPTY_TRAINING_SET, "does not exist")


def test_no_closed_label_window_by_ds(db: psycopg.Connection, tmp_path: Path) -> None:
    load_synthetic(db, rows=400)
    _assert_one_line(_train(tmp_path, ds="2023-01-01"), ExitCode.EMPTY_TRAINING_SET, "no labelled rows", "2023-01-01")


def test_single_cutoff_leaves_nothing_to_train_on(db: psycopg.Connection, tmp_path: Path) -> None:
    load_synthetic(db, rows=400, cutoffs=1)
    _assert_one_line(_train(tmp_path), ExitCode.EMPTY_TRAINING_SET, "temporal holdout")


def test_one_class_only(db: psycopg.Connection, tmp_path: Path) -> None:
    table = make_training_set(400, 4)
    table = table.set_column(table.column_names.index("churned"), "churned", pa.array([False] * 400))
    load_training_set(db, table)
    _assert_one_line(_train(tmp_path), ExitCode.SINGLE_CLASS, "one class", "not churned")


def test_no_feature_columns(db: psycopg.Connection, tmp_path: Path) -> None:
    keep = ("cutoff_date", "customer_id", "label_window_end", "churned", "_dbt_invocation_id")
    load_training_set(db, make_training_set(400, 4), columns=[c for c in COLUMNS if c[0] in keep])
    _assert_one_line(_train(tmp_path), ExitCode.MISSING_FEATURES, "no feature columns")


def test_missing_label_column(db: psycopg.Connection, tmp_path: Path) -> None:
    load_training_set(db, make_training_set(400, 4), columns=[c for c in COLUMNS if c[0] != "churned"])
    _assert_one_line(_train(tmp_path), ExitCode.MISSING_FEATURES, "churned")


def test_all_null_feature(db: psycopg.Connection, tmp_path: Path) -> None:
    table = make_training_set(400, 4)
    table = table.set_column(table.column_names.index("tenure_days"), "tenure_days", pa.nulls(400, pa.int32()))
    load_training_set(db, table)
    _assert_one_line(_train(tmp_path), ExitCode.ALL_NULL_FEATURE, "tenure_days")


def test_bad_date_and_bad_floor(db: psycopg.Connection, tmp_path: Path) -> None:
    _assert_one_line(_train(tmp_path, ds="2024-13-45"), ExitCode.BAD_ARGUMENT, "--ds")
    bad_floor = run_cli("train", "--ds", str(DS), "--auc-floor", "1.5", "--tolerance", "0", tmp_path=tmp_path)
    _assert_one_line(bad_floor, ExitCode.BAD_ARGUMENT, "--auc-floor")


def test_below_floor_without_champion_is_a_failure(db: psycopg.Connection, tmp_path: Path) -> None:
    load_synthetic(db, rows=2000)
    run = run_cli("train", "--ds", str(DS), "--auc-floor", "0.99", "--tolerance", "0.0", tmp_path=tmp_path)
    _assert_one_line(run, ExitCode.BELOW_FLOOR_NO_CHAMPION, "no champion", "below the floor")
    assert run.result is not None and run.result["promoted"] is False and run.result["version"] == 1
    assert champion_version(db) is None
    assert db.execute("select promoted from ml.model_promotions").fetchall() == [(False,)]

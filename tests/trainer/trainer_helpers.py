"""Helpers for the trainer tests: synthetic training sets in the real warehouse, and the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa

from trainer.synthetic import load_training_set, make_training_set

DS = date(2024, 6, 1)  # every synthetic label window (last cutoff 2024-03-01 + 90 days) has closed by then
ROWS = 4000
CUTOFFS = 4


def load_synthetic(conn: psycopg.Connection, rows: int = ROWS, cutoffs: int = CUTOFFS, seed: int = 0, **kwargs: Any) -> pa.Table:
    table = make_training_set(rows, cutoffs, seed=seed, **kwargs)
    load_training_set(conn, table)
    return table


def shuffle_training_labels(table: pa.Table, seed: int = 1) -> pa.Table:
    """Shuffle labels within the training cutoffs only: the holdout keeps its real labels, so a model
    fitted on noise is measurably worse there than a real champion."""
    cutoffs = table.column("cutoff_date").to_numpy()
    labels = table.column("churned").to_numpy(zero_copy_only=False).copy()
    train = np.flatnonzero(cutoffs < cutoffs.max())
    labels[train] = np.random.default_rng(seed).permutation(labels[train])
    return table.set_column(table.column_names.index("churned"), "churned", pa.array(labels))


@dataclass
class CliRun:
    code: int
    stdout: str
    stderr: str
    result: dict[str, Any] | None


def run_cli(*args: str, tmp_path: Path, env: dict[str, str] | None = None) -> CliRun:
    """`python -m trainer.cli ARGS` in the trainer env, against the test's database (PG* from the fixture)."""
    result_path = tmp_path / f"result-{os.getpid()}-{len(list(tmp_path.glob('result-*')))}.json"
    full_env = {**os.environ, "PIPELINE_RESULT_PATH": str(result_path), "PIPELINE_REPORTS_DIR": str(tmp_path / "reports"), **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.cli", *args], capture_output=True, text=True, env=full_env, timeout=300, check=False
    )
    result = json.loads(result_path.read_text()) if result_path.exists() else None
    return CliRun(proc.returncode, proc.stdout, proc.stderr, result)


def champion_version(conn: psycopg.Connection) -> int | None:
    row = conn.execute("select version from ml.model_champion where model_name = 'churn'").fetchone()
    return None if row is None else int(row[0])

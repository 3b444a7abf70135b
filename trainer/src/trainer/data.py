"""Read the labelled snapshots for D with one COPY, straight into Arrow columns.

`COPY (select ...) TO STDOUT (format csv)` streams the rows; pyarrow's multi-threaded CSV reader
parses them into typed columns (float32 numeric features, text categoricals) without a Python
object per row. Numeric columns are cast to float8 and categorical ones to text in SQL, exactly as
the predictor reads the features mart, so both see the same values.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql
from pyarrow import csv

from mlp_common.exit_codes import ExitCode, StageError
from trainer.config import MISSING_CATEGORY, TRAINING_SCHEMA, TRAINING_TABLE
from trainer.features import NUMERIC, Feature, discover, table_columns


@dataclass
class TrainingData:
    """Features (Arrow table, no nulls left), labels and cutoffs of the labelled snapshots."""

    features: list[Feature]
    table: pa.Table  # one column per feature: float32 (NaN for NULL) or string ("__missing__" for NULL)
    labels: np.ndarray  # int8, 1 = churned
    cutoffs: np.ndarray  # datetime64[D]
    dbt_invocation_ids: list[str]
    null_counts: dict[str, int]

    @property
    def rows(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, mask: np.ndarray) -> TrainingData:
        return TrainingData(
            self.features,
            self.table.filter(pa.array(mask)),
            self.labels[mask],
            self.cutoffs[mask],
            self.dbt_invocation_ids,
            self.null_counts,
        )


def onnx_inputs(table: pa.Table, features: list[dict[str, str]]) -> dict[str, np.ndarray]:
    """The ONNX feed for a table: one [n, 1] array per feature, float32 or object (str)."""
    feeds: dict[str, np.ndarray] = {}
    for feature in features:
        column = table.column(feature["name"])
        if feature["type"] == NUMERIC:
            values = column.to_numpy().astype(np.float32, copy=False)
        else:
            values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=object)
        feeds[feature["name"]] = values.reshape(-1, 1)
    return feeds


def _select(features: list[Feature], ds: date) -> sql.Composed:
    projections = [
        sql.SQL("cutoff_date"),
        sql.SQL("churned::int as churned"),
        *(
            sql.SQL("{c}::float8 as {c}").format(c=sql.Identifier(f.name))
            if f.kind == NUMERIC
            else sql.SQL("{c}::text as {c}").format(c=sql.Identifier(f.name))
            for f in features
        ),
    ]
    return sql.SQL(
        "select {cols} from {table} where label_window_end <= {ds} and churned is not null order by cutoff_date, customer_id"
    ).format(cols=sql.SQL(", ").join(projections), table=sql.Identifier(TRAINING_SCHEMA, TRAINING_TABLE), ds=sql.Literal(ds))


def _copy_csv(conn: psycopg.Connection, query: sql.Composed) -> io.BytesIO:
    buffer = io.BytesIO()
    with conn.cursor() as cur, cur.copy(sql.SQL("copy ({}) to stdout with (format csv, header true)").format(query)) as copy:
        for chunk in copy:
            buffer.write(chunk)
    buffer.seek(0)
    return buffer


def _parse(buffer: io.BytesIO, features: list[Feature]) -> pa.Table:
    types: dict[str, Any] = {"cutoff_date": pa.date32(), "churned": pa.int8()}
    types.update({f.name: pa.float32() if f.kind == NUMERIC else pa.string() for f in features})
    return csv.read_csv(
        buffer,
        read_options=csv.ReadOptions(block_size=16 << 20),
        convert_options=csv.ConvertOptions(
            column_types=types,
            null_values=[""],  # COPY CSV writes NULL as an unquoted empty field, '' as a quoted one
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )


def _invocation_ids(conn: psycopg.Connection, names: set[str], ds: date) -> list[str]:
    if "_dbt_invocation_id" not in names:
        return []
    rows = conn.execute(
        sql.SQL(
            "select distinct _dbt_invocation_id::text from {} where label_window_end <= %s and _dbt_invocation_id is not null order by 1"
        ).format(sql.Identifier(TRAINING_SCHEMA, TRAINING_TABLE)),
        (ds,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def load(conn: psycopg.Connection, ds: date) -> TrainingData:
    """The training rows for D (label window closed by D), checked: not empty, no all-null feature."""
    where = f"{TRAINING_SCHEMA}.{TRAINING_TABLE}"
    columns = table_columns(conn, TRAINING_SCHEMA, TRAINING_TABLE)
    if columns is None:
        raise StageError(f"{where} does not exist: build the marts (dbt-stage build --layer marts) first", ExitCode.EMPTY_TRAINING_SET)
    features = discover(columns, where)
    raw = _parse(_copy_csv(conn, _select(features, ds)), features)
    if raw.num_rows == 0:
        raise StageError(f"{where} has no labelled rows with label_window_end <= {ds}", ExitCode.EMPTY_TRAINING_SET)
    null_counts = {f.name: int(raw.column(f.name).null_count) for f in features}
    all_null = [name for name, nulls in null_counts.items() if nulls == raw.num_rows]
    if all_null:
        raise StageError(
            f"feature column(s) {', '.join(all_null)} are NULL in all {raw.num_rows} training rows for {ds}; refusing to train on them",
            ExitCode.ALL_NULL_FEATURE,
        )
    filled = {
        f.name: pc.fill_null(
            raw.column(f.name), pa.scalar(float("nan"), pa.float32()) if f.kind == NUMERIC else MISSING_CATEGORY
        ).combine_chunks()
        for f in features
    }
    table = pa.table(filled)
    labels = raw.column("churned").to_numpy().astype(np.int8, copy=False)
    cutoffs = raw.column("cutoff_date").to_numpy().astype("datetime64[D]")
    return TrainingData(features, table, labels, cutoffs, _invocation_ids(conn, {c.name for c in columns}, ds), null_counts)

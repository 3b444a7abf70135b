"""Synthetic labelled snapshots with the training-set mart's exact columns, for tests and the benchmark.

Shaped like what dbt builds (same names and SQL types as `customer_churn_training_set`), with a
label that depends on recency AND on other features non-linearly, so a good model beats the
recency-only baseline and a model on shuffled labels is visibly worse. Generated with numpy in
columns and loaded with COPY, so a million rows take seconds.
"""

from __future__ import annotations

import io
import uuid
from datetime import date, timedelta

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql
from pyarrow import csv

HORIZON_DAYS = 90
REGIONS = np.array(["north", "south", "east", "west"])
ACCOUNT_TYPES = np.array(["basic", "premium", "business"])

COLUMNS: list[tuple[str, str]] = [
    ("cutoff_date", "date not null"),
    ("customer_id", "text not null"),
    ("recency_days", "integer"),
    ("frequency", "bigint"),
    ("monetary_total", "double precision"),
    ("monetary_avg", "double precision"),
    ("tenure_days", "integer"),
    ("distinct_categories", "integer"),
    ("spend_volatility", "double precision"),
    ("spend_trend", "double precision"),
    ("frequency_trend", "double precision"),
    ("mean_days_between_purchases", "double precision"),
    ("return_rate", "double precision"),
    ("return_amount_total", "double precision"),
    ("age", "integer"),
    ("region", "text"),
    ("account_type", "text"),
    ("label_window_end", "date not null"),
    ("churned", "boolean not null"),
    ("_last_event_date", "date"),
    ("_dbt_invocation_id", "text"),
]


def cutoff_dates(last_cutoff: date, n_cutoffs: int, step_days: int = 28) -> list[date]:
    return [last_cutoff - timedelta(days=step_days * i) for i in range(n_cutoffs - 1, -1, -1)]


def make_training_set(
    rows: int, n_cutoffs: int = 6, *, last_cutoff: date = date(2024, 3, 1), seed: int = 0, invocation_id: str | None = None
) -> pa.Table:
    """`rows` labelled snapshots spread evenly over `n_cutoffs` cutoff dates (28 days apart)."""
    rng = np.random.default_rng(seed)
    cutoffs = np.array(cutoff_dates(last_cutoff, n_cutoffs), dtype="datetime64[D]")
    cutoff = cutoffs[np.arange(rows) % n_cutoffs]
    customer = np.arange(rows) // n_cutoffs
    recency = np.minimum(rng.gamma(1.3, 22.0, rows), 179).astype(np.int32)
    frequency = (rng.poisson(np.exp(rng.normal(1.6, 0.7, rows))) + 1).astype(np.int64)
    monetary_avg = np.exp(rng.normal(3.4, 0.6, rows))
    monetary_total = frequency * monetary_avg * rng.uniform(0.8, 1.2, rows)
    tenure = (recency + rng.gamma(2.0, 250.0, rows)).astype(np.int32)
    categories = np.minimum(rng.poisson(1.0 + np.log1p(frequency)), 12).astype(np.int32)
    volatility = np.where(frequency > 1, monetary_avg * rng.uniform(0.1, 0.9, rows), np.nan)
    spend_trend = np.clip(rng.normal(0.0, 0.45, rows), -1, 1)
    frequency_trend = np.clip(spend_trend * 0.6 + rng.normal(0.0, 0.3, rows), -1, 1)
    between = np.where(frequency > 1, 180.0 / frequency * rng.uniform(0.5, 1.5, rows), np.nan)
    return_rate = np.clip(rng.beta(0.6, 6.0, rows), 0, 1)
    return_amount = monetary_total * return_rate * rng.uniform(0.5, 1.0, rows)
    age = np.where(rng.random(rows) < 0.15, np.nan, rng.integers(18, 85, rows))
    region = REGIONS[rng.integers(0, len(REGIONS), rows)].astype(object)
    region[rng.random(rows) < 0.05] = None
    account = ACCOUNT_TYPES[rng.choice(len(ACCOUNT_TYPES), rows, p=[0.6, 0.3, 0.1])]

    z_recency = (np.log1p(recency) - 3.0) / 0.9
    logit = (
        -1.4
        + 1.1 * z_recency
        - 0.55 * (np.log1p(frequency) - 1.9)
        - 1.2 * spend_trend
        + 1.4 * (return_rate > 0.25)
        + 0.9 * ((account == "basic") & (tenure < 400))
        - 0.8 * (account == "business")
        + 0.7 * (np.nan_to_num(age, nan=40.0) < 25)
        + 0.6 * np.sin(tenure / 120.0)
    )
    churned = rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))
    invocation = invocation_id or str(uuid.UUID(int=int(rng.integers(0, 2**62))))
    return pa.table(
        {
            "cutoff_date": pa.array(cutoff, pa.date32()),
            "customer_id": pa.array([f"C{c:07d}" for c in customer]),
            "recency_days": recency,
            "frequency": frequency,
            "monetary_total": monetary_total,
            "monetary_avg": monetary_avg,
            "tenure_days": tenure,
            "distinct_categories": categories,
            "spend_volatility": pa.array(volatility, from_pandas=True),
            "spend_trend": spend_trend,
            "frequency_trend": frequency_trend,
            "mean_days_between_purchases": pa.array(between, from_pandas=True),
            "return_rate": return_rate,
            "return_amount_total": return_amount,
            "age": pa.array(age, pa.float64(), from_pandas=True).cast(pa.int32()),
            "region": pa.array(region, pa.string()),
            "account_type": pa.array(account, pa.string()),
            "label_window_end": pa.array(cutoff + np.timedelta64(HORIZON_DAYS, "D"), pa.date32()),
            "churned": pa.array(churned),
            "_last_event_date": pa.array(cutoff - recency.astype("timedelta64[D]"), pa.date32()),
            "_dbt_invocation_id": pa.array([invocation] * rows),
        }
    )


def load_training_set(conn: psycopg.Connection, table: pa.Table, columns: list[tuple[str, str]] | None = None) -> None:
    """(Re)create `marts.customer_churn_training_set` with the mart's column types and COPY `table` into it."""
    columns = columns if columns is not None else [(n, t) for n, t in COLUMNS if n in table.column_names]
    with conn.transaction():
        conn.execute("create schema if not exists marts")
        conn.execute("drop table if exists marts.customer_churn_training_set")
        conn.execute(
            sql.SQL("create table marts.customer_churn_training_set ({})").format(
                sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in columns)  # type: ignore[arg-type]
            )
        )
        names = [n for n, _ in columns]
        buffer = io.BytesIO()
        csv.write_csv(table.select(names), buffer, write_options=csv.WriteOptions(include_header=False))
        buffer.seek(0)
        statement = sql.SQL("copy marts.customer_churn_training_set ({}) from stdin with (format csv)").format(
            sql.SQL(", ").join(sql.Identifier(n) for n in names)
        )
        with conn.cursor() as cur, cur.copy(statement) as copy:
            while block := buffer.read(8 << 20):
                copy.write(block)

"""The prediction tables in `ml.*`: written by the predictor, read by the trainer's `due` and the DAG.

- `ml.churn_predictions`: one row per (as_of_date, customer_id), carrying the model version that
  scored it. A shard-run replaces its own rows in one transaction, so readers see a date's previous
  scores or the new ones for that shard, never a half-written batch, and never a duplicate (the key).
- `ml.prediction_batches`: one row per (as_of_date, shard_count, shard) run: row count, score
  quantiles, PSI against the model's training scores, and the drift flag.
"""

from __future__ import annotations

import psycopg

SCHEMA_DDL = """
create schema if not exists ml;

create table if not exists ml.churn_predictions (
    as_of_date date not null,
    customer_id text not null,
    model_version bigint not null,
    churn_probability double precision not null check (churn_probability between 0 and 1),
    risk_band text not null check (risk_band in ('low', 'medium', 'high')),
    scored_at timestamptz not null,
    primary key (as_of_date, customer_id)
);

create table if not exists ml.prediction_batches (
    batch_id uuid primary key,
    as_of_date date not null,
    model_version bigint not null,
    shard int not null,
    shard_count int not null,
    rows bigint not null,
    quantiles jsonb not null,
    psi double precision,
    drift boolean not null,
    created_at timestamptz not null default now(),
    unique (as_of_date, shard_count, shard),
    check (shard_count >= 1 and shard >= 0 and shard < shard_count)
);
"""


def ensure_schema(conn: psycopg.Connection) -> None:
    """Create the prediction tables if missing (idempotent; safe under concurrent shard pods)."""
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('ml.predictions.ddl'))")
        conn.execute(SCHEMA_DDL)

"""The prediction tables in `ml.*`: written by the predictor, read by the trainer's `due` and the DAG.

- `ml.churn_predictions`: one row per (as_of_date, customer_id), carrying the model version that
  scored it. Partitioned by date, and each date by hash of customer_id into the shards of its run
  (`ml.churn_predictions_p<YYYYMMDD>` -> `..._s<I>of<N>`). A shard-run loads a fresh table and swaps
  it in for its shard's partition in one short transaction: readers see the previous scores of that
  shard or the new ones, never a half-written batch, and never a duplicate (the key). Loading a
  fresh table costs a third of inserting into a live primary-key index (measured: 1.25 s against
  3.7 s for 1 M rows), and a re-run drops the old partition instead of deleting its rows.
- `ml.prediction_batches`: one row per (as_of_date, shard_count, shard) run: row count, score
  quantiles, PSI against the model's training scores, and the drift flag.

Shard membership is PostgreSQL's own hash partitioning of customer_id (`satisfies_hash_partition`
against the key-only table `ml.customer_shards`): the same function routes rows into a date's
shard partitions and selects a shard's customers from the features mart, so they cannot disagree.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg
from psycopg import sql

from mlp_common.warehouse import lock_for_transaction

SCHEMA = "ml"
TABLE = "churn_predictions"

# One definition for the partitioned table, each date's table and each freshly loaded shard: ATTACH needs
# the same columns, collations and CHECK constraints (by name) all the way down.
COLUMNS = """
    as_of_date date not null,
    -- "C": bytewise order, so building a shard's primary key sorts twice as fast as under a libc locale
    customer_id text collate "C" not null,
    model_version bigint not null,
    churn_probability double precision not null constraint churn_probability_range check (churn_probability between 0 and 1),
    risk_band text not null constraint risk_band_known check (risk_band in ('low', 'medium', 'high')),
    scored_at timestamptz not null
"""

SCHEMA_DDL = f"""
create schema if not exists ml;

create table if not exists ml.churn_predictions ({COLUMNS}, primary key (as_of_date, customer_id)) partition by list (as_of_date);

-- no rows, ever: it only defines the shard function (PostgreSQL's hash partitioning of customer_id)
create table if not exists ml.customer_shards (customer_id text collate "C" not null) partition by hash (customer_id);

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
        lock_for_transaction(conn, SCHEMA, TABLE, "ddl")
        _migrate_unpartitioned(conn)
        conn.execute(SCHEMA_DDL)


def shard_predicate(count: int, index: int, column: str = "customer_id") -> sql.Composable:
    """SQL that is true for the customers of shard `index` of `count` (true for every one when count is 1)."""
    if count == 1:
        return sql.SQL("true")
    return sql.SQL("satisfies_hash_partition('ml.customer_shards'::regclass, {n}, {i}, {c}::text)").format(
        n=sql.Literal(count), i=sql.Literal(index), c=sql.Identifier(column)
    )


def date_partition(ds: date) -> str:
    return f"{TABLE}_p{ds:%Y%m%d}"


def shard_partition(ds: date, count: int, index: int) -> str:
    return f"{date_partition(ds)}_s{index}of{count}"


def create_shard_table(conn: psycopg.Connection, name: str, ds: date, model_version: int) -> None:
    """A standalone table shaped like a shard partition of `ds`, to COPY (customer_id, churn_probability, risk_band) into.

    Created in the writer's transaction, so nobody sees it before the swap and a crash leaves nothing.
    The CHECK lets the swap attach it without re-reading its rows for the date bound. Its columns come
    from COLUMNS, not `like ml.churn_predictions`: that would hold a lock on the partitioned table
    from the load to the swap, and concurrent shards would deadlock on the date's re-layout.
    """
    conn.execute(
        sql.SQL("create table {t} ({columns}, check (as_of_date = {d}))").format(
            t=sql.Identifier(SCHEMA, name), columns=sql.SQL(COLUMNS), d=sql.Literal(ds)
        )
    )
    conn.execute(
        sql.SQL(
            "alter table {t} alter column as_of_date set default {d}, alter column model_version set default {v},"
            " alter column scored_at set default now()"
        ).format(t=sql.Identifier(SCHEMA, name), d=sql.Literal(ds), v=sql.Literal(model_version))
    )


def finish_shard_table(conn: psycopg.Connection, name: str) -> None:
    """Build the loaded table's primary key in one sort (instead of a row-by-row index insert) and drop its load defaults."""
    table = sql.Identifier(SCHEMA, name)
    conn.execute("set local maintenance_work_mem = '256MB'")
    conn.execute(
        sql.SQL(
            "alter table {t} alter column as_of_date drop default, alter column model_version drop default,"
            " alter column scored_at drop default, add primary key (as_of_date, customer_id)"
        ).format(t=table)
    )


def swap_in(conn: psycopg.Connection, loaded: str, ds: date, count: int, index: int) -> int:
    """Make the loaded table shard `index` of `count` of date `ds`; return how many rows it replaced.

    Runs in the caller's transaction, after the load: holds the date's lock only for catalog changes
    (and the one-off re-layout when a date is scored with a different shard count than before).
    """
    lock_for_transaction(conn, SCHEMA, TABLE, ds.isoformat())
    _ensure_date_layout(conn, ds, count)
    leaf = shard_partition(ds, count, index)
    replaced = 0
    if _exists(conn, leaf):
        replaced = int(_scalar(conn, sql.SQL("select count(*) from {}").format(sql.Identifier(SCHEMA, leaf))))
        conn.execute(sql.SQL("drop table {}").format(sql.Identifier(SCHEMA, leaf)))
    conn.execute(sql.SQL("alter table {} rename to {}").format(sql.Identifier(SCHEMA, loaded), sql.Identifier(leaf)))
    conn.execute(
        sql.SQL("alter table {parent} attach partition {leaf} for values with (modulus {n}, remainder {i})").format(
            parent=sql.Identifier(SCHEMA, date_partition(ds)), leaf=sql.Identifier(SCHEMA, leaf), n=sql.Literal(count), i=sql.Literal(index)
        )
    )
    return replaced


def _ensure_date_layout(conn: psycopg.Connection, ds: date, count: int) -> None:
    """Date `ds` partitioned by hash into `count` shards; an existing date with another count is re-partitioned, rows kept."""
    parent = date_partition(ds)
    moduli = {
        row[0]
        for row in conn.execute(
            """
            select (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'modulus (\\d+)'))[1]::int
            from pg_inherits i join pg_class c on c.oid = i.inhrelid
            where i.inhparent = to_regclass(%s)
            """,
            (f"{SCHEMA}.{parent}",),
        )
    }
    if moduli == {count}:
        return
    if not moduli and _exists(conn, parent):
        return  # created by an earlier run that had not attached a shard yet: any count fits
    if not _exists(conn, parent):
        conn.execute(_create_date_parent(parent))
        conn.execute(_attach_date(parent, ds))
        return
    # scored with another shard count before: move the date's rows into a layout for `count` (rare; all in this transaction)
    target = f"{parent}_relayout"
    conn.execute(_create_date_parent(target))
    conn.execute(sql.SQL("alter table {} add primary key (as_of_date, customer_id)").format(sql.Identifier(SCHEMA, target)))
    for i in range(count):
        conn.execute(
            sql.SQL("create table {leaf} partition of {t} for values with (modulus {n}, remainder {i})").format(
                leaf=sql.Identifier(SCHEMA, shard_partition(ds, count, i)),
                t=sql.Identifier(SCHEMA, target),
                n=sql.Literal(count),
                i=sql.Literal(i),
            )
        )
    conn.execute(sql.SQL("insert into {t} select * from {p}").format(t=sql.Identifier(SCHEMA, target), p=sql.Identifier(SCHEMA, parent)))
    conn.execute(sql.SQL("drop table {}").format(sql.Identifier(SCHEMA, parent)))
    conn.execute(sql.SQL("alter table {} rename to {}").format(sql.Identifier(SCHEMA, target), sql.Identifier(parent)))
    conn.execute(_attach_date(parent, ds))


def _create_date_parent(name: str) -> sql.Composed:
    """A date's table, partitioned by hash of customer_id into its shards (attached to the top afterwards: ATTACH only
    takes a SHARE UPDATE EXCLUSIVE lock on ml.churn_predictions, so readers of other dates never wait)."""
    return sql.SQL("create table {t} ({columns}) partition by hash (customer_id)").format(
        t=sql.Identifier(SCHEMA, name), columns=sql.SQL(COLUMNS)
    )


def _attach_date(parent: str, ds: date) -> sql.Composed:
    return sql.SQL("alter table {top} attach partition {p} for values in ({d})").format(
        top=sql.Identifier(SCHEMA, TABLE), p=sql.Identifier(SCHEMA, parent), d=sql.Literal(ds)
    )


def _exists(conn: psycopg.Connection, name: str) -> bool:
    return bool(_scalar(conn, sql.SQL("select to_regclass({}) is not null").format(sql.Literal(f"{SCHEMA}.{name}"))))


def _scalar(conn: psycopg.Connection, query: sql.Composed) -> Any:
    row = conn.execute(query).fetchone()
    return None if row is None else row[0]


def _migrate_unpartitioned(conn: psycopg.Connection) -> None:
    """Turn a `ml.churn_predictions` from before partitioning into the partitioned layout, keeping every row."""
    kind = conn.execute("select relkind from pg_class where oid = to_regclass('ml.churn_predictions')").fetchone()
    if kind is None or kind[0] == "p":
        return
    conn.execute("alter table ml.churn_predictions rename to churn_predictions_unpartitioned")
    conn.execute("alter index ml.churn_predictions_pkey rename to churn_predictions_unpartitioned_pkey")
    conn.execute(SCHEMA_DDL)
    dates = [row[0] for row in conn.execute("select distinct as_of_date from ml.churn_predictions_unpartitioned")]
    for ds in dates:
        _ensure_date_layout(conn, ds, 1)
        conn.execute(
            sql.SQL("create table {leaf} partition of {p} for values with (modulus 1, remainder 0)").format(
                leaf=sql.Identifier(SCHEMA, shard_partition(ds, 1, 0)), p=sql.Identifier(SCHEMA, date_partition(ds))
            )
        )
    conn.execute("insert into ml.churn_predictions select * from ml.churn_predictions_unpartitioned")
    conn.execute("drop table ml.churn_predictions_unpartitioned")

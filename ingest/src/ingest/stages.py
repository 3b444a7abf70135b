"""Month tables a history load fills on its second connection, then attaches in its own transaction.

A history load's transaction (T) cannot share its work with another connection: a second
transaction cannot write into the month tables T created and truncated. So the second connection
creates tables of its own, not yet partitions (`_stage_<table>_<token>_m<YYYYMM>`), COPYs into
them (frozen: new in its transaction) and commits; nobody reads them, as no partitioned table
has them. T then attaches each one as its month's partition and renames it. A CHECK constraint
that names the month's days lets ATTACH skip scanning the rows. Until T commits, the load is
invisible. If it never commits, the stage tables are left over; the next history load of the
table drops them (it holds the table's lock, so no live load owns any), and a load that fails
drops its own.

The stage tables' `_loaded_at` defaults to T's `now()`: the dbt project orders the copies of a
transaction by it, and every row of one load must carry the same load time (as the batches do).

A history load that names every day of an existing month table (a backfill run again) stages
that month too, replacing the old table instead of deleting its rows: T keeps the old rows of
days the load brought no rows for, drops the old table and attaches the new one. Those stage
tables are created on either connection (in T itself for the load's own lane).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import psycopg
from psycopg import sql

from ingest.contract import METADATA_COLUMNS, RAW_SCHEMA, TableContract, columns_ddl, month_partition_name


@dataclass(frozen=True)
class Stage:
    """One month's stage table: its name, the days it may hold (the month's partition values), and
    whether it replaces the month's existing table."""

    name: str
    month: date
    days: tuple[date, ...]
    replaces: bool = False


def stage_prefix(table: TableContract) -> str:
    return f"_stage_{table.name}_"


def plan(table: TableContract, token: int, month_days: dict[date, list[date]], *, replaces: bool = False) -> list[Stage]:
    """A stage table per month (`token`: unique to the load, so no two loads share a name)."""
    return [
        Stage(f"{stage_prefix(table)}{token}_m{month:%Y%m}", month, tuple(days), replaces)
        for month, days in sorted(month_days.items())
        if days
    ]


def _values(days: tuple[date, ...]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Literal(day) for day in days)


def create(conn: psycopg.Connection, table: TableContract, stages: list[Stage], loaded_at: datetime) -> None:
    """Create the stage tables in `conn`'s transaction: the columns of `raw.<table>` (from the
    contract: the partitioned table is not touched, so no lock on it is held until this transaction
    ends), a constraint that lists the days (what ATTACH checks), `_loaded_at` defaulting to `loaded_at`."""
    columns = sql.SQL(columns_ddl(table, sql.Literal(loaded_at).as_string(conn)))
    for stage in stages:
        conn.execute(
            sql.SQL("create table {stage} ({columns}, constraint {check} check (_partition_date in ({days})))").format(
                stage=sql.Identifier(RAW_SCHEMA, stage.name),
                columns=columns,
                check=sql.Identifier(f"{stage.name}_days"),
                days=_values(stage.days),
            )
        )


def attach(conn: psycopg.Connection, table: TableContract, stages: list[Stage], loaded_days: set[date]) -> None:
    """Make each stage table its month's partition, named and defined as one the load had created
    (`_loaded_at` defaulting to `now()` again, for the daily loads that replace a day in it). A
    stage that replaces a month table first takes the old table's rows of days not in
    `loaded_days` (the load replaces only days it has rows for); the old table is dropped, which
    locks `raw.<table>` exclusively until T commits."""
    columns = sql.SQL(", ").join(map(sql.Identifier, (*table.columns, *METADATA_COLUMNS)))
    for stage in stages:
        staged = sql.Identifier(RAW_SCHEMA, stage.name)
        if stage.replaces:
            old = sql.Identifier(RAW_SCHEMA, month_partition_name(table, stage.month))
            kept = [day for day in stage.days if day not in loaded_days]
            if kept:
                conn.execute(
                    sql.SQL("insert into {} ({}) select {} from {} where _partition_date = any(%s)").format(staged, columns, columns, old),
                    (kept,),
                )
            conn.execute(sql.SQL("drop table {}").format(old))
        conn.execute(
            sql.SQL("alter table {} attach partition {} for values in ({})").format(
                sql.Identifier(RAW_SCHEMA, table.name), staged, _values(stage.days)
            )
        )
        conn.execute(
            sql.SQL("alter table {} drop constraint {}, alter column _loaded_at set default now()").format(
                staged, sql.Identifier(f"{stage.name}_days")
            )
        )
        conn.execute(sql.SQL("alter table {} rename to {}").format(staged, sql.Identifier(month_partition_name(table, stage.month))))


def drop(conn: psycopg.Connection, names: list[str]) -> None:
    """Drop stage tables (autocommit `conn`) that no load will attach."""
    for name in names:
        conn.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(RAW_SCHEMA, name)))


def left_over(conn: psycopg.Connection, table: TableContract, *, keep: int) -> list[str]:
    """The stage tables of `table` that no load owns: all but those of token `keep` (the caller's
    load), while it holds the table's lock."""
    found = conn.execute(
        "select c.relname from pg_class as c inner join pg_namespace as n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relkind = 'r' and starts_with(c.relname, %s)",
        (RAW_SCHEMA, stage_prefix(table)),
    ).fetchall()
    own = f"{stage_prefix(table)}{keep}_"
    return sorted(name for (name,) in found if not name.startswith(own))

"""The raw data contract (docs/data-contract.md) in code: tables, columns, and the raw DDL.

Every source column lands as text: casting and cleaning is dbt staging's job, so a bad value is
never lost at load time. Load metadata columns start with an underscore.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

RAW_SCHEMA = "raw"


@dataclass(frozen=True)
class TableContract:
    name: str
    columns: tuple[str, ...]
    date_column: str  # partitions a history load
    required: bool  # transactions must exist for a daily load; customers may be absent

    @property
    def rejected(self) -> str:
        return f"{self.name}_rejected"


TABLES: dict[str, TableContract] = {
    "transactions": TableContract(
        name="transactions",
        columns=("transaction_id", "customer_id", "amount", "transaction_date", "category", "merchant_id"),
        date_column="transaction_date",
        required=True,
    ),
    "customers": TableContract(
        name="customers",
        columns=("customer_id", "age", "region", "account_type", "signup_date"),
        date_column="signup_date",
        required=False,
    ),
}

METADATA_COLUMNS = ("_line_number", "_partition_date", "_batch_id", "_loaded_at")


def partition_name(table: TableContract, day: date) -> str:
    """The table holding one day of `table` when a daily load created it: raw.<table>_d<YYYYMMDD>."""
    return f"{table.name}_d{day:%Y%m%d}"


def month_partition_name(table: TableContract, month: date) -> str:
    """The table a history load creates for a month's days: raw.<table>_m<YYYYMM>."""
    return f"{table.name}_m{month:%Y%m}"


def partition_ddl(table: TableContract, day: date) -> str:
    """The day's partition of `table` (a daily load's), its `_partition_date` defaulting to that
    day (so a daily COPY straight into it need not send the date). Names and dates here come from
    the contract and `date` objects, never from input text."""
    return (
        f"create table if not exists {RAW_SCHEMA}.{partition_name(table, day)} partition of {RAW_SCHEMA}.{table.name}"
        f" (_partition_date default '{day.isoformat()}') for values in ('{day.isoformat()}')"
    )


def month_partition_ddl(table: TableContract, month: date, days: list[date]) -> str:
    """A history load's partition for `days` (the days of `month` no day partition holds yet)."""
    values = ", ".join(f"'{day.isoformat()}'" for day in days)
    return f"create table {RAW_SCHEMA}.{month_partition_name(table, month)} partition of {RAW_SCHEMA}.{table.name} for values in ({values})"


def ddl(table: TableContract) -> str:
    """Landing table (list-partitioned by `_partition_date`), rejected table, and the load batch log.

    A daily load gives its day a table of its own, so that a reload is a TRUNCATE of that day (no
    dead rows, no index to keep) and the daily dbt build reads that day only. A history load puts
    a month's days in one table: creating a table costs ~2 ms of catalog work whatever its size,
    and a two-year backfill of day tables spent more on that DDL than on its rows.
    Per-row metadata is kept small, because every row pays for it: line number, batch id and load
    time; `raw.load_batches` says which file a batch was, its mode and its counts.
    """
    return f"""
create schema if not exists {RAW_SCHEMA};

create table if not exists {RAW_SCHEMA}.load_batches (
    batch_id bigint generated always as identity primary key,
    table_name text not null,
    mode text not null,
    source_file text not null,
    partition_dates date[] not null default '{{}}',
    rows_read bigint not null default 0,
    rows_loaded bigint not null default 0,
    rows_rejected bigint not null default 0,
    bytes_read bigint not null default 0,
    seconds double precision not null default 0,
    loaded_at timestamptz not null default now()
);

create table if not exists {RAW_SCHEMA}.{table.name} (
    {columns_ddl(table)}
) partition by list (_partition_date);

create table if not exists {RAW_SCHEMA}.{table.rejected} (
    _line_number bigint not null,
    reason text not null,
    raw_line bytea not null,
    _partition_date date,
    _batch_id bigint not null,
    _loaded_at timestamptz not null default now()
);
create index if not exists {table.rejected}_partition_idx on {RAW_SCHEMA}.{table.rejected} (_partition_date);
"""


def columns_ddl(table: TableContract, loaded_at_default: str = "now()") -> str:
    """The columns of `raw.<table>` and of each of its partitions: the source columns as text, then
    the load metadata (`loaded_at_default`: SQL; a history load's stage tables take its load time)."""
    source_columns = ",\n    ".join(f"{c} text" for c in table.columns)
    return f"""{source_columns},
    _line_number bigint not null,
    _partition_date date not null,
    _batch_id bigint not null,
    _loaded_at timestamptz not null default {loaded_at_default}"""

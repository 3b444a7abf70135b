"""Load raw files into `raw.*` with COPY, in one transaction, replacing the dates they cover.

Daily load (`--ds D`): `<source>/<table>/<D>.csv|.parquet`; every row belongs to partition D.
History load: any files under `<source>/<table>/` (or one file with `--table`); each row belongs to
the partition of its own date column. Either way the dates a load covers are replaced whole:
their old rows (and old rejected lines) go, the new ones arrive, in the same transaction. Writers
of the same table and date are serialised by an advisory lock; different dates load concurrently.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from ingest.contract import RAW_SCHEMA, TABLES, TableContract, ddl, partition_ddl, partition_name
from ingest.parse import CHUNK_BYTES, CsvReader, Rejected
from mlp_common.exit_codes import ExitCode, StageError
from mlp_common.logs import get_logger
from mlp_common.warehouse import RAW_LOAD_LOCK, lock_for_transaction, session_lock

log = get_logger("ingest.load")
SUFFIXES = (".csv", ".parquet")
# Partitions created per DDL transaction: each holds the parent's exclusive lock only briefly (a
# few milliseconds a partition), and a backfill of two years commits 8 times instead of 730.
PARTITIONS_PER_TRANSACTION = 100
# Files at least this big are sent by a worker thread (parsing the next block overlaps the server's
# COPY work); for the small day files of a backfill, starting and joining a thread per file cost
# more than the overlap saves.
QUEUED_WRITER_MIN_BYTES = 2 * CHUNK_BYTES


@dataclass
class TableLoad:
    table: str
    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    bytes_read: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    partitions: set[date] = field(default_factory=set)

    def add(self, loaded: FileLoad) -> None:
        self.files.append(str(loaded.path))
        self.bytes_read += loaded.path.stat().st_size
        self.rows_loaded += loaded.rows_loaded
        self.rows_rejected += len(loaded.rejected)
        self.rows_read = self.rows_loaded + self.rows_rejected
        self.rejected_by_reason.update(item.reason for item in loaded.rejected)

    def as_dict(self) -> dict[str, object]:
        return {
            "files": len(self.files),
            "rows_read": self.rows_read,
            "rows_loaded": self.rows_loaded,
            "rows_rejected": self.rows_rejected,
            "bytes_read": self.bytes_read,
            "partitions": len(self.partitions),
            "rejected_by_reason": dict(self.rejected_by_reason.most_common()),
        }


def ensure_schema(conn: psycopg.Connection) -> None:
    """Create the raw schema's tables if missing (idempotent, serialised between concurrent loads)."""
    with conn.transaction():
        lock_for_transaction(conn, "raw", "ddl")
        for table in TABLES.values():
            conn.execute(ddl(table))  # type: ignore[arg-type]


def daily_files(source: Path, ds: date) -> dict[str, Path]:
    """The day's partition file per table; a missing required table is an error."""
    if not source.is_dir():
        raise StageError(f"source folder {source} does not exist", ExitCode.SOURCE_MISSING)
    found: dict[str, Path] = {}
    for table in TABLES.values():
        candidates = [source / table.name / f"{ds.isoformat()}{suffix}" for suffix in SUFFIXES]
        present = [c for c in candidates if c.exists()]
        if len(present) > 1:
            raise StageError(
                f"both {present[0].name} and {present[1].name} exist for {table.name} on {ds}; keep one", ExitCode.BAD_ARGUMENT
            )
        if present:
            found[table.name] = present[0]
        elif table.required:
            raise StageError(
                f"no {table.name} file for {ds} in {source / table.name} (expected {ds.isoformat()}.csv or .parquet)",
                ExitCode.SOURCE_MISSING,
            )
    return found


def history_files(source: Path, table_name: str | None) -> dict[str, list[Path]]:
    """Files of a history load: a folder of `<table>/` folders, or one file (or folder) for `table_name`."""
    if not source.exists():
        raise StageError(f"source {source} does not exist", ExitCode.SOURCE_MISSING)
    if table_name is not None:
        _table(table_name)
        files = [source] if source.is_file() else sorted(p for p in source.iterdir() if p.suffix in SUFFIXES)
        if not files:
            raise StageError(f"no .csv or .parquet files in {source}", ExitCode.SOURCE_MISSING)
        return {table_name: files}
    if source.is_file():
        raise StageError(f"{source} is a file: say which table it holds with --table", ExitCode.BAD_ARGUMENT)
    found: dict[str, list[Path]] = {}
    for folder in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
        _table(folder.name)
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
        if files:
            found[folder.name] = files
    if "transactions" not in found:
        raise StageError(f"no transactions files under {source}/transactions/", ExitCode.SOURCE_MISSING)
    return found


def _table(name: str) -> TableContract:
    if name not in TABLES:
        raise StageError(f"unknown table '{name}' (the contract has: {', '.join(TABLES)})", ExitCode.UNKNOWN_TABLE)
    return TABLES[name]


def _open_reader(path: Path, table: TableContract, by_date: bool, constants: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """A reader for the file, and the handle to close (None for Parquet). `constants`: metadata
    columns with one value for the whole file, appended to every row after the line number."""
    constants = constants or {}
    if path.suffix == ".parquet":
        from ingest.parquet import ParquetReader  # pyarrow costs start-up time: only when needed

        return ParquetReader(path, table, by_date, constants), None
    try:
        handle = path.open("rb")
    except PermissionError as exc:
        raise StageError(f"{path}: permission denied", ExitCode.FILE_UNREADABLE) from exc
    except OSError as exc:
        raise StageError(f"{path}: cannot be read ({exc.strerror})", ExitCode.FILE_UNREADABLE) from exc
    try:
        tail = "".join("," + value for value in constants.values()).encode()
        return CsvReader(handle, path, table, by_date, tail), handle
    except BaseException:
        handle.close()
        raise


def preflight(files: dict[str, list[Path]], by_date: bool) -> None:
    """Open every file and check its header before anything is written: bad input writes nothing."""
    for name, paths in files.items():
        for path in paths:
            _, handle = _open_reader(path, TABLES[name], by_date)
            if handle is not None:
                handle.close()


@dataclass
class FileLoad:
    batch_id: int
    path: Path
    rows_loaded: int = 0
    rejected: list[Rejected] = field(default_factory=list)


def _new_batch(conn: psycopg.Connection, table: TableContract, path: Path, mode: str) -> int:
    row = conn.execute(
        sql.SQL("insert into {} (table_name, mode, source_file) values (%s, %s, %s) returning batch_id").format(
            sql.Identifier(RAW_SCHEMA, "load_batches")
        ),
        (table.name, mode, str(path)),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _writer(cur: psycopg.Cursor, path: Path) -> QueuedLibpqWriter | None:
    """The queued writer (a worker thread) for big files, psycopg's default (same thread) for small ones."""
    try:
        big = path.stat().st_size >= QUEUED_WRITER_MIN_BYTES
    except OSError:
        big = False
    return QueuedLibpqWriter(cur) if big else None


def _copy_file(conn: psycopg.Connection, path: Path, table: TableContract, target: sql.Composable, ds: date | None) -> FileLoad:
    """COPY one file as one load batch into `target`; its rejected lines go to the rejected table.

    Daily: `target` is the day's partition, whose `_partition_date` default is that day. History:
    `target` is a staging table and every row carries its own date.
    """
    by_date = ds is None
    started = time.perf_counter()
    loaded = FileLoad(_new_batch(conn, table, path, "history" if by_date else "daily"), path)
    constants = {"_batch_id": str(loaded.batch_id)}
    reader, handle = _open_reader(path, table, by_date, constants)
    columns = [*reader.header.columns, "_line_number"] + (["_partition_date"] if by_date else []) + list(constants)
    copy_sql = sql.SQL("copy {} ({}) from stdin with (format csv)").format(target, sql.SQL(", ").join(map(sql.Identifier, columns)))
    try:
        with conn.cursor() as cur, cur.copy(copy_sql, writer=_writer(cur, path)) as copy:
            for batch in reader.batches():
                if batch.payload:
                    copy.write(batch.payload)
                loaded.rows_loaded += batch.rows
                loaded.rejected.extend(batch.rejected)
    except OSError as exc:
        raise StageError(f"{path}: read failed mid-file ({exc.strerror or exc}); nothing was loaded", ExitCode.FILE_UNREADABLE) from exc
    finally:
        if handle is not None:
            handle.close()
    if loaded.rejected:
        rejected_copy = sql.SQL("copy {} (_line_number, reason, raw_line, _partition_date, _batch_id) from stdin").format(
            sql.Identifier(RAW_SCHEMA, table.rejected)
        )
        with conn.cursor() as cur, cur.copy(rejected_copy) as copy:
            for item in loaded.rejected:
                copy.write_row((item.line_number, item.reason, item.raw, item.partition or ds, loaded.batch_id))
    conn.execute(
        sql.SQL(
            "update {} set partition_dates = %s, rows_read = %s, rows_loaded = %s, rows_rejected = %s, bytes_read = %s, seconds = %s"
            " where batch_id = %s"
        ).format(sql.Identifier(RAW_SCHEMA, "load_batches")),
        (
            [ds] if ds else [],
            loaded.rows_loaded + len(loaded.rejected),
            loaded.rows_loaded,
            len(loaded.rejected),
            path.stat().st_size,
            time.perf_counter() - started,
            loaded.batch_id,
        ),
    )
    return loaded


def _ddl_connection(conn: psycopg.Connection) -> psycopg.Connection:
    """A second, autocommit connection to the same database, for DDL that must commit on its own."""
    return psycopg.connect(conn.info.dsn, password=conn.info.password, autocommit=True, application_name="ingest-ddl")


def ensure_partitions(conn: psycopg.Connection, table: TableContract, days: list[date]) -> list[date]:
    """Create the day partitions that do not exist yet, in short transactions of their own
    (`conn` is an autocommit connection), at most PARTITIONS_PER_TRANSACTION days each.

    Creating a partition locks the parent table exclusively, so it must not happen inside the
    (long) load transaction: that would block every other load and every reader until commit.
    One transaction per partition, though, cost a commit (a WAL flush) per day: a two-year
    backfill spent a quarter of its time there (bench/run.py, profiled with py-spy).
    Returns the days whose partitions did not exist before.
    """
    existing = {
        r[0]
        for r in conn.execute(
            "select c.relname from pg_inherits as i inner join pg_class as c on c.oid = i.inhrelid where i.inhparent = %s::regclass",
            (f"{RAW_SCHEMA}.{table.name}",),
        ).fetchall()
    }
    missing = [day for day in sorted(days) if partition_name(table, day) not in existing]
    for start in range(0, len(missing), PARTITIONS_PER_TRANSACTION):
        with conn.transaction():
            for day in missing[start : start + PARTITIONS_PER_TRANSACTION]:
                lock_for_transaction(conn, "raw.partition", table.name, day.isoformat())
                # another loader may have created it since the query above (it held the same lock)
                conn.execute(partition_ddl(table, day))  # type: ignore[arg-type]
    return missing


def load(conn: psycopg.Connection, files: dict[str, list[Path]], *, ds: date | None) -> dict[str, TableLoad]:
    """Load `files` (daily when `ds` is given, else history) in one transaction; return per-table counts."""
    preflight(files, ds is None)
    ensure_schema(conn)
    if ds is not None:
        with _ddl_connection(conn) as ddl_conn:
            for name in files:
                ensure_partitions(ddl_conn, TABLES[name], [ds])
    results: dict[str, TableLoad] = {}
    with session_lock(conn, *RAW_LOAD_LOCK, shared=True), conn.transaction():
        if ds is not None:
            for name, paths in files.items():
                stats = results[name] = TableLoad(name)
                _load_day(conn, TABLES[name], paths, ds, stats)
                log.info("loaded %s", name, extra={"fields": {"table": name, **stats.as_dict()}})
        else:
            # every table's files first, then every partition, then the replacements: partitions are
            # created (from a second connection) before this transaction has truncated anything,
            # because catalog lookups slow down while an open transaction holds hundreds of
            # rewritten partitions (the DDL of a two-year backfill took twice as long)
            staged = {}
            for name, paths in files.items():
                staged[name] = _stage_history(conn, TABLES[name], paths, results.setdefault(name, TableLoad(name)))
            with _ddl_connection(conn) as ddl_conn:
                for name, history in staged.items():
                    history.new_days = set(ensure_partitions(ddl_conn, TABLES[name], history.days))
            for name, history in staged.items():
                _replace_history(conn, TABLES[name], history, results[name])
                log.info("loaded %s", name, extra={"fields": {"table": name, **results[name].as_dict()}})
    return results


def _load_day(conn: psycopg.Connection, table: TableContract, paths: list[Path], ds: date, stats: TableLoad) -> None:
    """Replace day `ds`: empty its partition and its rejected lines, COPY straight into the partition."""
    lock_for_transaction(conn, "raw", table.name, ds.isoformat())
    partition = sql.Identifier(RAW_SCHEMA, partition_name(table, ds))
    conn.execute(sql.SQL("truncate {}").format(partition))
    conn.execute(sql.SQL("delete from {} where _partition_date = %s").format(sql.Identifier(RAW_SCHEMA, table.rejected)), (ds,))
    for path in paths:
        stats.add(_copy_file(conn, path, table, partition, ds))
    stats.partitions = {ds}


@dataclass
class StagedHistory:
    """A table's history files, COPYed into a temporary staging table: the days they cover, their batches."""

    staging: sql.Identifier
    days: list[date]
    batches: list[int]
    new_days: set[date] = field(default_factory=set)  # partitions this load created (empty, unless a concurrent load filled one)


def _stage_history(conn: psycopg.Connection, table: TableContract, paths: list[Path], stats: TableLoad) -> StagedHistory:
    """COPY every file into a staging table; the days are known only once the files are read.

    Their partitions are then created from a second connection (this transaction holds no lock on
    the parent yet) and `_replace_history` truncates and refills them here.
    """
    staging = sql.Identifier(f"ingest_history_{table.name}")
    # spelled out, not `like raw.<table>`: that would lock the parent and deadlock with the partition DDL
    columns: list[sql.Composable] = [sql.SQL("{} text").format(sql.Identifier(c)) for c in table.columns]
    columns += [sql.SQL("_line_number bigint not null, _partition_date date not null, _batch_id bigint not null")]
    conn.execute(sql.SQL("create temporary table {} ({}) on commit drop").format(staging, sql.SQL(", ").join(columns)))
    batches = []
    for path in paths:
        loaded = _copy_file(conn, path, table, staging, None)
        stats.add(loaded)
        batches.append(loaded.batch_id)
    days = [r[0] for r in conn.execute(sql.SQL("select distinct _partition_date from {} order by 1").format(staging)).fetchall()]
    return StagedHistory(staging, days, batches)


def _replace_history(conn: psycopg.Connection, table: TableContract, history: StagedHistory, stats: TableLoad) -> None:
    """Replace each day the staged files cover with their rows (the partitions exist by now)."""
    staging, days, batches = history.staging, history.days, history.batches
    for day in days:
        lock_for_transaction(conn, "raw", table.name, day.isoformat())
    # TRUNCATE gives each partition a new file: for the hundreds a backfill has just created (empty)
    # that cost more than the load itself; one DELETE empties them instead (a no-op unless a
    # concurrent load of one of those days committed rows in between; it replaces those too)
    old_days = [d for d in days if d not in history.new_days]
    if old_days:
        partitions = sql.SQL(", ").join(sql.Identifier(RAW_SCHEMA, partition_name(table, d)) for d in old_days)
        conn.execute(sql.SQL("truncate {}").format(partitions))
    if history.new_days:
        conn.execute(
            sql.SQL("delete from {} where _partition_date = any(%s)").format(sql.Identifier(RAW_SCHEMA, table.name)),
            (sorted(history.new_days),),
        )
    names = sql.SQL(", ").join(map(sql.Identifier, [*table.columns, "_line_number", "_partition_date", "_batch_id"]))
    conn.execute(sql.SQL("insert into {} ({}) select {} from {}").format(sql.Identifier(RAW_SCHEMA, table.name), names, names, staging))
    conn.execute(
        sql.SQL(
            """
            delete from {rejected} as r
            where not (r._batch_id = any(%s))
                and (
                    r._partition_date = any(%s)
                    or (r._partition_date is null and r._batch_id in (
                        select b.batch_id from {batches} as b where b.table_name = %s and b.source_file = any(%s)
                    ))
                )
            """
        ).format(rejected=sql.Identifier(RAW_SCHEMA, table.rejected), batches=sql.Identifier(RAW_SCHEMA, "load_batches")),
        (batches, days, table.name, stats.files),
    )
    stats.partitions = set(days)

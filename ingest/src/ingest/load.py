"""Load raw files into `raw.*` with COPY, in one transaction, replacing the dates they cover.

Daily load (`--ds D`): `<source>/<table>/<D>.csv|.parquet`; every row belongs to partition D.
History load: any files under `<source>/<table>/` (or one file with `--table`); each row belongs to
the partition of its own date column. Either way the dates a load covers are replaced whole:
their old rows (and old rejected lines) go, the new ones arrive, in the same transaction. Writers
of the same table and date are serialised by an advisory lock; different dates load concurrently.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import psycopg
from mlp_common.exit_codes import ExitCode, StageError
from mlp_common.logs import get_logger
from mlp_common.warehouse import lock_for_transaction
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from ingest.contract import RAW_SCHEMA, TABLES, TableContract, ddl
from ingest.parse import CsvReader, Rejected

log = get_logger("ingest.load")
SUFFIXES = (".csv", ".parquet")


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
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('raw.ddl'))")
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
    batch_id: str
    path: Path
    rows_loaded: int = 0
    rejected: list[Rejected] = field(default_factory=list)


def _copy_file(conn: psycopg.Connection, path: Path, table: TableContract, by_date: bool, default_day: date | None) -> FileLoad:
    """COPY one file as one load batch; its rejected lines go to the rejected table with their reason."""
    loaded = FileLoad(str(uuid.uuid4()), path)
    constants = {"_batch_id": loaded.batch_id} if by_date else {"_partition_date": str(default_day), "_batch_id": loaded.batch_id}
    reader, handle = _open_reader(path, table, by_date, constants)
    columns = [*reader.header.columns, "_line_number"] + (["_partition_date"] if by_date else []) + list(constants)
    copy_sql = sql.SQL("copy {} ({}) from stdin with (format csv)").format(
        sql.Identifier(RAW_SCHEMA, table.name), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    try:
        # the queued writer sends on a worker thread: parsing the next block overlaps the server's COPY work
        with conn.cursor() as cur, cur.copy(copy_sql, writer=QueuedLibpqWriter(cur)) as copy:
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
                copy.write_row((item.line_number, item.reason, item.raw, item.partition or default_day, loaded.batch_id))
    return loaded


def load(conn: psycopg.Connection, files: dict[str, list[Path]], *, ds: date | None) -> dict[str, TableLoad]:
    """Load `files` (daily when `ds` is given, else history) in one transaction; return per-table counts."""
    by_date = ds is None
    preflight(files, by_date)
    ensure_schema(conn)
    results: dict[str, TableLoad] = {}
    with conn.transaction():
        for name, paths in files.items():
            table = TABLES[name]
            stats = results[name] = TableLoad(name)
            if ds is not None:
                _clear_day(conn, table, ds)
            batches: list[str] = []
            for path in paths:
                started = time.perf_counter()
                loaded = _copy_file(conn, path, table, by_date, ds)
                stats.add(loaded)
                batches.append(loaded.batch_id)
                _record_batch(conn, table, loaded, "history" if by_date else "daily", ds, time.perf_counter() - started)
            if ds is None:
                _replace_history_partitions(conn, table, batches, stats)
            else:
                stats.partitions = {ds}
            log.info("loaded %s", name, extra={"fields": {"table": name, **stats.as_dict()}})
    return results


def _clear_day(conn: psycopg.Connection, table: TableContract, ds: date) -> None:
    """Daily load: take the date's lock, then remove what an earlier load of that date left."""
    lock_for_transaction(conn, "raw", table.name, ds.isoformat())
    conn.execute(sql.SQL("delete from {} where _partition_date = %s").format(sql.Identifier(RAW_SCHEMA, table.name)), (ds,))
    conn.execute(sql.SQL("delete from {} where _partition_date = %s").format(sql.Identifier(RAW_SCHEMA, table.rejected)), (ds,))


def _replace_history_partitions(conn: psycopg.Connection, table: TableContract, batches: list[str], stats: TableLoad) -> None:
    """After COPY: lock the dates this load covers, then drop older rows of those dates.

    Rejected lines whose date could not be read have no partition: an older load's such lines
    from the same source files are replaced instead.
    """
    target = sql.Identifier(RAW_SCHEMA, table.name)
    rejected_table = sql.Identifier(RAW_SCHEMA, table.rejected)
    rows = conn.execute(
        sql.SQL("select distinct _partition_date from {} where _batch_id = any(%s) order by 1").format(target), (batches,)
    ).fetchall()
    days = [r[0] for r in rows]
    for day in days:
        lock_for_transaction(conn, "raw", table.name, day.isoformat())
    conn.execute(sql.SQL("delete from {} where _partition_date = any(%s) and not (_batch_id = any(%s))").format(target), (days, batches))
    conn.execute(
        sql.SQL(
            """
            delete from {rejected} as r
            where not (r._batch_id = any(%s))
                and (
                    r._partition_date = any(%s)
                    or (r._partition_date is null and r._batch_id in (
                        select b.batch_id from {raw}.load_batches as b where b.table_name = %s and b.source_file = any(%s)
                    ))
                )
            """
        ).format(rejected=rejected_table, raw=sql.Identifier(RAW_SCHEMA)),
        (batches, days, table.name, stats.files),
    )
    stats.partitions = set(days)


def _record_batch(conn: psycopg.Connection, table: TableContract, loaded: FileLoad, mode: str, ds: date | None, seconds: float) -> None:
    rejected = len(loaded.rejected)
    conn.execute(
        sql.SQL(
            """
            insert into {}.load_batches (batch_id, table_name, mode, source_file, partition_dates,
                rows_read, rows_loaded, rows_rejected, bytes_read, seconds)
            values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            """
        ).format(sql.Identifier(RAW_SCHEMA)),
        (
            loaded.batch_id,
            table.name,
            mode,
            str(loaded.path),
            [ds] if ds else [],
            loaded.rows_loaded + rejected,
            loaded.rows_loaded,
            rejected,
            loaded.path.stat().st_size,
            seconds,
        ),
    )

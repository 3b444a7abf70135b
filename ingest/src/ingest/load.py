"""Load raw files into `raw.*` with COPY, in one transaction, replacing the dates they cover.

Daily load (`--ds D`): `<source>/<table>/<D>.csv|.parquet`; every row belongs to day D, which gets
a partition of its own. History load: any files under `<source>/<table>/` (or one file with
`--table`); each row belongs to the day of its own date column, and days without a partition get
one per month. Either way the dates a load covers are replaced whole: their old rows (and old
rejected lines) go, the new ones arrive, in the same transaction. Writers of the same table and
date are serialised by an advisory lock (different dates load concurrently); a history load of a
table holds the whole table.
"""

from __future__ import annotations

import calendar
import concurrent.futures
import contextlib
import itertools
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import BinaryIO

import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from ingest import stages
from ingest.contract import (
    RAW_SCHEMA,
    TABLES,
    TableContract,
    ddl,
    month_partition_ddl,
    month_partition_name,
    partition_ddl,
    partition_name,
)
from ingest.lanes import CopyLane, copy_sql
from ingest.parse import CHUNK_BYTES, Batch, CsvReader, Rejected
from mlp_common.exit_codes import ExitCode, StageError
from mlp_common.logs import get_logger
from mlp_common.warehouse import RAW_LOAD_LOCK, lock_for_transaction, session_lock

log = get_logger("ingest.load")
SUFFIXES = (".csv", ".parquet")
# Months whose partitions are created per DDL transaction: each transaction holds the parent's
# exclusive lock only briefly (a few milliseconds a partition), and commits (a WAL flush) are few.
PARTITIONS_PER_TRANSACTION = 100
# A daily file at least this big is sent by a worker thread: parsing the next block overlaps the
# server's COPY work. For small ones, starting and joining the thread cost more than the overlap
# saves. (A history load always sends through `CopyLane`s.)
QUEUED_WRITER_MIN_BYTES = 2 * CHUNK_BYTES
# A history load reads a table whose files add up to at most this many bytes whole before it
# creates any partition (see `_load_history`): every day its rows hold is known up front.
READ_AHEAD_BYTES = CHUNK_BYTES
# A load's COPY goes into tables its transaction created or truncated, so with wal_level=minimal it
# skips the WAL and the commit syncs those tables to disk instead. Asking the kernel to start
# writing each backend's pages every 256 kB, while the COPY goes on, leaves that fsync little to
# do (the 50 k history load's commit: ~0.11 s instead of ~0.18 s).
EARLY_WRITEBACK = "set local backend_flush_after = '256kB'"


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
        self.bytes_read += loaded.size
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


def _open_reader(  # type: ignore[no-untyped-def]
    path: Path, table: TableContract, by_date: bool, constants: dict[str, str] | None = None, covered: set[date] | None = None
):
    """A reader for the file, and the handle to close (None for Parquet). `constants`: metadata
    columns with one value for the whole file, appended to every row after the line number (and
    the partition date of a history load, whose rows of days outside `covered` are held back)."""
    constants = constants or {}
    if path.suffix == ".parquet":
        from ingest.parquet import ParquetReader  # pyarrow costs start-up time: only when needed

        return ParquetReader(path, table, by_date, constants, covered), None
    try:
        handle = path.open("rb")
    except PermissionError as exc:
        raise StageError(f"{path}: permission denied", ExitCode.FILE_UNREADABLE) from exc
    except OSError as exc:
        raise StageError(f"{path}: cannot be read ({exc.strerror})", ExitCode.FILE_UNREADABLE) from exc
    try:
        tail = "".join("," + value for value in constants.values()).encode()
        return CsvReader(handle, path, table, by_date, tail, covered), handle
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
    days: set[date] = field(default_factory=set)
    seconds: float = 0.0
    size: int = 0  # bytes of the file, read once


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _copy_file(conn: psycopg.Connection, path: Path, table: TableContract, partition: str, ds: date, *, day_table: bool) -> FileLoad:
    """COPY one file of day `ds` as one load batch into the partition holding that day. A day
    table's `_partition_date` defaults to its day; a month table needs it on every row. A day table
    was truncated by this transaction, so its rows go in frozen (`copy_sql`)."""
    started = time.perf_counter()
    row = conn.execute(
        sql.SQL("insert into {} (table_name, mode, source_file) values (%s, 'daily', %s) returning batch_id").format(
            sql.Identifier(RAW_SCHEMA, "load_batches")
        ),
        (table.name, str(path)),
    ).fetchone()
    assert row is not None
    loaded = FileLoad(int(row[0]), path, days={ds}, size=_size(path))
    constants = ({} if day_table else {"_partition_date": ds.isoformat()}) | {"_batch_id": str(loaded.batch_id)}
    reader, handle = _open_reader(path, table, False, constants)
    statement = copy_sql(partition, [*reader.header.columns, "_line_number", *constants], freeze=day_table)
    try:
        with conn.cursor() as cur:
            # a worker thread sends big files (parsing the next block overlaps the server's COPY work);
            # for small ones, starting and joining it cost more than the overlap saves
            writer = QueuedLibpqWriter(cur) if loaded.size >= QUEUED_WRITER_MIN_BYTES else None
            with cur.copy(statement, writer=writer) as copy:
                for batch in reader.batches():
                    if batch.payload:
                        copy.write(batch.payload)
                    loaded.rows_loaded += batch.rows
                    loaded.rejected.extend(batch.rejected)
    except OSError as exc:
        raise _read_failed(path, exc) from exc
    finally:
        if handle is not None:
            handle.close()
    for item in loaded.rejected:
        item.partition = ds
    loaded.seconds = time.perf_counter() - started
    _write_rejected(conn, table, [loaded])
    _record_batches(conn, [loaded])
    return loaded


def _read_failed(path: Path, exc: OSError) -> StageError:
    return StageError(f"{path}: read failed mid-file ({exc.strerror or exc}); nothing was loaded", ExitCode.FILE_UNREADABLE)


def _write_rejected(conn: psycopg.Connection, table: TableContract, loaded: list[FileLoad]) -> None:
    """COPY the files' rejected lines into the table's rejected table."""
    if not any(item.rejected for item in loaded):
        return
    rejected_copy = sql.SQL("copy {} (_line_number, reason, raw_line, _partition_date, _batch_id) from stdin").format(
        sql.Identifier(RAW_SCHEMA, table.rejected)
    )
    with conn.cursor() as cur, cur.copy(rejected_copy) as copy:
        for item in loaded:
            for line in item.rejected:
                copy.write_row((line.line_number, line.reason, line.raw, line.partition, item.batch_id))


def _record_batches(conn: psycopg.Connection, loaded: list[FileLoad]) -> None:
    """Each file's counts and the days its rows went to, in its `raw.load_batches` row (one statement)."""
    rows = [
        (
            item.batch_id,
            sorted(item.days),
            item.rows_loaded + len(item.rejected),
            item.rows_loaded,
            len(item.rejected),
            item.size,
            item.seconds,
        )
        for item in loaded
    ]
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "update {} set partition_dates = %s, rows_read = %s, rows_loaded = %s, rows_rejected = %s, bytes_read = %s, seconds = %s"
                " where batch_id = %s"
            ).format(sql.Identifier(RAW_SCHEMA, "load_batches")),
            [(*rest, batch_id) for batch_id, *rest in rows],
        )


def _connect_again(conn: psycopg.Connection, application_name: str, *, autocommit: bool = False) -> psycopg.Connection:
    """Another connection to `conn`'s database, as the same user."""
    return psycopg.connect(conn.info.dsn, password=conn.info.password, autocommit=autocommit, application_name=application_name)


def _ddl_connection(conn: psycopg.Connection) -> psycopg.Connection:
    """A second, autocommit connection to the same database, for DDL that must commit on its own."""
    return _connect_again(conn, "ingest-ddl", autocommit=True)


_PARTITION_NAME = re.compile(r"_(d\d{8}|m\d{6})$")


@dataclass
class Layout:
    """The partitions of a raw table: day tables (daily loads) and month tables (history loads)."""

    days: set[date]
    months: set[date]

    def holds(self, day: date) -> bool:
        return day in self.days or day.replace(day=1) in self.months

    def covered(self, around: set[date]) -> set[date]:
        """Of the days of the months of `around`, those that have a partition."""
        return {day for month in {d.replace(day=1) for d in around} for day in _days_of(month) if self.holds(day)}

    def partition(self, table: TableContract, day: date) -> str:
        return partition_name(table, day) if day in self.days else month_partition_name(table, day.replace(day=1))

    def month_days(self, month: date) -> list[date]:
        """The days a month table holds: its month's days that no day table holds (a month table
        takes the days free when it is created, and no day table is created for a day it holds)."""
        return [day for day in _days_of(month) if day not in self.days] if month in self.months else []


def layout(conn: psycopg.Connection, table: TableContract) -> Layout:
    names = conn.execute(
        "select c.relname from pg_inherits as i inner join pg_class as c on c.oid = i.inhrelid where i.inhparent = %s::regclass",
        (f"{RAW_SCHEMA}.{table.name}",),
    ).fetchall()
    found = Layout(set(), set())
    for (name,) in names:
        match = _PARTITION_NAME.search(name)
        if match and name == f"{table.name}{match.group(0)}":
            key = match.group(1)
            if key[0] == "d":
                found.days.add(date(int(key[1:5]), int(key[5:7]), int(key[7:9])))
            else:
                found.months.add(date(int(key[1:5]), int(key[5:7]), 1))
    return found


def _days_of(month: date) -> list[date]:
    return [month.replace(day=d) for d in range(1, calendar.monthrange(month.year, month.month)[1] + 1)]


def ensure_partitions(conn: psycopg.Connection, table: TableContract, days: list[date], *, monthly: bool) -> list[str]:
    """Give each of `days` a partition if none holds it yet: a day table each (`monthly` false: a
    daily load), or a table per month for all of that month's days without one (a history load).
    Returns the tables created.

    Run from an autocommit connection, in short transactions of their own (PARTITIONS_PER_TRANSACTION
    tables each): creating a partition locks the parent table exclusively, so it must not happen
    inside the (long) load transaction, which would block every other load and every reader until
    commit; one transaction per table, though, cost a commit (a WAL flush) each. Creators of the
    same month are serialised (a day table and a month table listing that day would collide).
    """
    months = sorted({day.replace(day=1) for day in days})
    created: list[str] = []
    for start in range(0, len(months), PARTITIONS_PER_TRANSACTION):
        chunk = months[start : start + PARTITIONS_PER_TRANSACTION]
        with conn.transaction():
            for month in chunk:
                lock_for_transaction(conn, "raw.partition", table.name, f"{month:%Y-%m}")
            existing = layout(conn, table)  # read under the locks: another loader may have created some
            for month in chunk:
                if monthly:
                    free = [day for day in _days_of(month) if not existing.holds(day)]
                    if free:
                        conn.execute(month_partition_ddl(table, month, free))  # type: ignore[arg-type]
                        created.append(month_partition_name(table, month))
                    continue
                for day in sorted(d for d in days if d.replace(day=1) == month and not existing.holds(d)):
                    conn.execute(partition_ddl(table, day))  # type: ignore[arg-type]
                    created.append(partition_name(table, day))
    return created


def load(conn: psycopg.Connection, files: dict[str, list[Path]], *, ds: date | None) -> dict[str, TableLoad]:
    """Load `files` (daily when `ds` is given, else history) in one transaction; return per-table counts."""
    preflight(files, ds is None)
    ensure_schema(conn)
    if ds is not None:
        with _ddl_connection(conn) as ddl_conn:
            for name in files:
                ensure_partitions(ddl_conn, TABLES[name], [ds], monthly=False)
    results = {name: TableLoad(name) for name in files}
    committed_stages: list[str] = []  # tables a history load's second connection committed (`ingest.stages`)
    try:
        with session_lock(conn, *RAW_LOAD_LOCK, shared=True), conn.transaction():
            conn.execute(EARLY_WRITEBACK)
            if ds is not None:
                for name, paths in files.items():
                    _load_day(conn, TABLES[name], paths, ds, results[name])
                    _log_loaded(results[name])
            else:
                _load_histories(
                    conn, [_plan_history(conn, TABLES[name], paths) for name, paths in files.items()], results, committed_stages
                )
    except BaseException:
        if committed_stages:  # this transaction will never attach them
            with contextlib.suppress(psycopg.Error), _ddl_connection(conn) as ddl_conn:
                stages.drop(ddl_conn, committed_stages)
        raise
    return results


def _log_loaded(stats: TableLoad) -> None:
    log.info("loaded %s", stats.table, extra={"fields": {"table": stats.table, **stats.as_dict()}})


def _load_histories(conn: psycopg.Connection, plans: list[_History], results: dict[str, TableLoad], committed_stages: list[str]) -> None:
    """History loads of `plans`' tables in the load's transaction. The partitions of a table read
    ahead are created by a thread on a connection of its own while the other tables load (its days
    are known, and DDL is most of such a table's cost: 60 month tables, ~0.2 s, for the 50 k
    customers), so those tables load last."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ingest-ddl-ahead") as pool:
        for plan in plans:
            if plan.ahead is not None:
                plan.partitions = pool.submit(_make_partitions, _ddl_connection(conn), plan, sorted(plan.named))
        for plan in sorted(plans, key=lambda plan: plan.ahead is not None):
            _load_history(conn, plan, results[plan.table.name], committed_stages)
            _log_loaded(results[plan.table.name])


def _load_day(conn: psycopg.Connection, table: TableContract, paths: list[Path], ds: date, stats: TableLoad) -> None:
    """Replace day `ds`: empty it (and its rejected lines), COPY straight into its partition."""
    lock_for_transaction(conn, "raw", table.name, shared=True)  # a history load of the table holds it exclusively
    lock_for_transaction(conn, "raw", table.name, ds.isoformat())
    found = layout(conn, table)
    partition = found.partition(table, ds)
    day_table = ds in found.days
    if day_table:
        conn.execute(sql.SQL("truncate {}").format(sql.Identifier(RAW_SCHEMA, partition)))
    else:  # a history load's month table holds the day
        conn.execute(sql.SQL("delete from {} where _partition_date = %s").format(sql.Identifier(RAW_SCHEMA, partition)), (ds,))
    conn.execute(sql.SQL("delete from {} where _partition_date = %s").format(sql.Identifier(RAW_SCHEMA, table.rejected)), (ds,))
    for path in paths:
        stats.add(_copy_file(conn, path, table, partition, ds, day_table=day_table))
    stats.partitions = {ds}


@dataclass
class _History:
    """What a history load of one table knows before it sends a row (`_plan_history`)."""

    table: TableContract
    files: list[tuple[Path, int]]  # each file and its batch id
    before: Layout  # the table's partitions before the load
    named: set[date]  # the days the load announces: its files' names, and a table read ahead its rows' days
    ahead: _ReadAhead | None  # the files' batches, for a table read ahead
    partitions: concurrent.futures.Future[list[str]] | None = None  # a table read ahead: the partitions made for it


def _plan_history(conn: psycopg.Connection, table: TableContract, paths: list[Path]) -> _History:
    """Hold the table (daily loads of it wait), note its partitions, give each file its batch, and
    read the files of a small table (at most READ_AHEAD_BYTES in all) whole."""
    lock_for_transaction(conn, "raw", table.name)
    before = layout(conn, table)
    ids = _new_batches(conn, table, paths)
    files = list(zip(paths, ids, strict=True))
    ahead = _read_ahead(table, files) if sum(map(_size, paths)) <= READ_AHEAD_BYTES else None
    named = {day for day in (_iso_date(path.stem) for path in paths) if day is not None}
    if ahead is not None:  # and the days the rows hold: none is held back, no partition created in this transaction
        named |= set().union(*(item.days for item, _ in ahead))
    return _History(table, files, before, named, ahead)


def _make_partitions(ddl_conn: psycopg.Connection, plan: _History, days: list[date]) -> list[str]:
    """On `ddl_conn` (closed on return): drop the stage tables no load owns and give `days` the
    month tables they lack; the tables created."""
    with ddl_conn:
        stages.drop(ddl_conn, stages.left_over(ddl_conn, plan.table, keep=plan.files[0][1]))
        return ensure_partitions(ddl_conn, plan.table, days, monthly=True)


def _plan_stages(conn: psycopg.Connection, plan: _History) -> tuple[list[stages.Stage], list[stages.Stage]]:
    """The stage tables (`ingest.stages`) of the second connection and of the load's own: every
    other new month goes to the second, and the months the load replaces whole (it names every day
    they hold) are split between both. A table read ahead is small: it gets no second connection,
    which would cost more than it saves."""
    table, token, before, named = plan.table, plan.files[0][1], plan.before, plan.named
    months = {day.replace(day=1) for day in named}
    existing_days = {month: before.month_days(month) for month in sorted(months & before.months)}
    replaced = {month: days for month, days in existing_days.items() if named.issuperset(days)}
    side_months = sorted(months - before.months)[1::2] if plan.ahead is None else []
    side_replaced = list(replaced)[1::2] if plan.ahead is None else []
    staged: list[stages.Stage] = []
    if side_months:
        for month in side_months:  # held until commit: no day table appears in a staged month
            lock_for_transaction(conn, "raw.partition", table.name, f"{month:%Y-%m}")
        unheld = layout(conn, table)  # read under those locks
        staged = stages.plan(table, token, {month: [day for day in _days_of(month) if not unheld.holds(day)] for month in side_months})
    staged += stages.plan(table, token, {month: replaced[month] for month in side_replaced}, replaces=True)
    own = stages.plan(table, token, {month: days for month, days in replaced.items() if month not in side_replaced}, replaces=True)
    return staged, own


def _load_history(conn: psycopg.Connection, plan: _History, stats: TableLoad, committed_stages: list[str]) -> None:
    """Replace every day the files hold rows for: COPY them straight into their month tables (or
    into the parent table, which routes each row to its day's partition), then delete those days'
    older rows.

    Partitions must exist before a row reaches the parent, and creating one must not happen in
    this transaction (see `ensure_partitions`). The days are known only once the files are read,
    so the files' names (`<YYYY-MM-DD>.<ext>`, as landed) say which months to create first; rows
    of any other month are held back (`Batch.deferred`, spooled to a temporary file) and sent at
    the end, after this transaction has created their partitions itself (a short exclusive lock,
    released at commit). Daily loads of the table wait for this one (a table lock they hold shared).

    Every other new month is filled on a second connection instead (`ingest.stages`): the server's
    COPY, one backend per connection, is what bounds the load. `committed_stages` gets the stage
    tables that connection committed, for the caller to drop if this transaction fails. A month
    table whose every day the files' names announce (a backfill run again) is staged as well, on
    either connection, and replaces the old table: no old row to delete, none routed one by one.

    A table whose files add up to at most READ_AHEAD_BYTES (a customer table beside its
    transactions) is read whole first instead, so the days its rows hold are announced too: its
    partitions are all created up front, while the other tables load (`_load_histories`), none in
    this transaction (where creating one locks the parent until commit), no row is held back, and
    it is sent on one connection.
    """
    table, files, before, named, ahead = plan.table, plan.files, plan.before, plan.named, plan.ahead
    staged, own = _plan_stages(conn, plan)
    side_months = {stage.month for stage in staged if not stage.replaces}
    replaced = {stage.month for stage in [*staged, *own] if stage.replaces}
    loaded: list[FileLoad] = []
    with _side_connection(conn, bool(staged)) as side, _Spools() as held:
        lanes = []
        loaded_at = _transaction_start(conn)
        if side is not None:  # creates its stage tables while the DDL connection creates the other months
            committed_stages.extend(stage.name for stage in staged)  # once the lane commits (dropped if this load fails)
            lanes.append(
                CopyLane(
                    side,
                    "side",
                    {stage.name for stage in staged},
                    setup=lambda: stages.create(side, table, staged, loaded_at),
                    finish=side.commit,
                )
            )
        try:
            if plan.partitions is not None:
                created = plan.partitions.result()
            else:
                created = _make_partitions(_ddl_connection(conn), plan, [d for d in named if d.replace(day=1) not in side_months])
            stages.create(conn, table, own, loaded_at)  # new in this transaction: frozen, no WAL
            found = layout(conn, table)
            covered = found.covered(named) | {day for stage in staged for day in stage.days}
            targets = _Targets(table, found, covered, set(created), staged, own)
            if ahead is not None:  # known already: which of them a batch goes to directly (a truncate costs ~2 ms)
                targets.created -= set(created) - {targets.of(batch) for _, batches in ahead for _, batch in batches}
            if truncated := [name for name in created if name in targets.created]:
                # empty, and only this load writes to them; truncated here they get files of this
                # transaction, and with wal_level=minimal (the embedded warehouse) COPY skips the WAL
                conn.execute(sql.SQL("truncate {}").format(sql.SQL(", ").join(sql.Identifier(RAW_SCHEMA, name) for name in truncated)))
            lanes.insert(0, CopyLane(conn, "main", targets.created))
        except BaseException:
            _close_lanes(lanes, failed=True)
            raise
        _copy_history(table, files, targets, lanes, loaded, held, ahead)
        loaded_days: set[date] = set().union(*(f.days for f in loaded))
        stages.attach(conn, table, [*staged, *own], loaded_days)
        if held.files:
            ensure_partitions(conn, table, sorted(loaded_days - covered), monthly=True)
        for columns, spool in held.files.items():
            spool.seek(0)
            with conn.cursor() as cur, cur.copy(copy_sql(table.name, columns)) as copy:
                while chunk := spool.read(CHUNK_BYTES):
                    copy.write(chunk)
    loaded.sort(key=lambda item: item.batch_id)
    days = sorted(loaded_days)
    batches = [f.batch_id for f in loaded]
    # this load's rows are the only ones in the partitions it created or replaced (daily loads of
    # the table wait for its lock): older rows can only be in the other partitions there before
    old_days = [day for day in days if day in before.days or (before.holds(day) and day.replace(day=1) not in replaced)]
    if old_days:
        conn.execute(
            sql.SQL("delete from {} where _partition_date = any(%s) and not (_batch_id = any(%s))").format(
                sql.Identifier(RAW_SCHEMA, table.name)
            ),
            (old_days, batches),
        )
    for item in loaded:
        stats.add(item)
    _write_rejected(conn, table, loaded)
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
    _record_batches(conn, loaded)
    stats.partitions = set(days)


def _iso_date(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        return None


def _new_batches(conn: psycopg.Connection, table: TableContract, paths: list[Path]) -> list[int]:
    """A `raw.load_batches` row per file of a history load (one statement); their ids, in order."""
    ids = conn.execute(
        sql.SQL("insert into {} (table_name, mode, source_file) select %s, 'history', unnest(%s::text[]) returning batch_id").format(
            sql.Identifier(RAW_SCHEMA, "load_batches")
        ),
        (table.name, [str(p) for p in paths]),
    ).fetchall()
    return [int(batch_id) for (batch_id,) in ids]


def _transaction_start(conn: psycopg.Connection) -> datetime:
    row = conn.execute("select now()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


@contextlib.contextmanager
def _side_connection(conn: psycopg.Connection, wanted: bool) -> Iterator[psycopg.Connection | None]:
    """A second connection to the same database (None unless `wanted`), its transaction rolled
    back unless committed."""
    if not wanted:
        yield None
        return
    with _connect_again(conn, "ingest-side") as side:
        side.execute(EARLY_WRITEBACK)  # opens the transaction its lane commits
        yield side


@dataclass
class _Targets:
    """Where a history load's COPY sends a batch: straight into a month table this load created
    (and truncated) or staged, frozen, when all its rows belong there; else into the parent table,
    which routes each row to its partition."""

    table: TableContract
    found: Layout
    covered: set[date]
    created: set[str]  # tables new in the load's transaction (COPY FREEZE on its own lane); `own` added
    side: list[stages.Stage]  # stage tables of the second connection (`ingest.stages`)
    own: list[stages.Stage]  # stage tables of the load's transaction (months it replaces)
    staged: dict[date, str] = field(init=False)  # month -> its stage table, either connection's
    staged_names: set[str] = field(init=False)
    side_names: set[str] = field(init=False)

    def __post_init__(self) -> None:
        self.created |= {stage.name for stage in self.own}
        self.staged = {stage.month: stage.name for stage in [*self.side, *self.own]}
        self.staged_names = set(self.staged.values())
        self.side_names = {stage.name for stage in self.side}

    def partition(self, day: date) -> str:
        staged = self.staged.get(day.replace(day=1))
        return staged if staged is not None and day not in self.found.days else self.found.partition(self.table, day)

    def of(self, batch: Batch) -> str | None:
        """The table to COPY the batch's payload into: the created or staged month table that holds
        all its rows, else the parent; None when its rows span tables and some belong to a stage
        table, which the parent can route to only once it is attached (the payload waits)."""
        names = {self.partition(day) for day in batch.days & self.covered}
        if len(names) == 1 and (names <= self.created or names <= self.staged_names):
            return names.pop()
        return None if names & self.staged_names else self.table.name

    def on_side(self, path: Path) -> bool:
        """Whether the file's name announces a month staged on the second connection (its rows go there)."""
        day = _iso_date(path.stem)
        return day is not None and self.staged.get(day.replace(day=1)) in self.side_names


class _Spools(contextlib.ExitStack):
    """Rows a history load holds back, in a temporary file per column order (`files`), to be sent
    through the parent table at the end; the files are closed (deleted) with the stack."""

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[tuple[str, ...], BinaryIO] = {}

    def write(self, columns: tuple[str, ...], rows: bytes) -> None:
        if columns not in self.files:
            self.files[columns] = self.enter_context(tempfile.TemporaryFile(prefix="ingest-deferred-"))  # noqa: SIM115 - closed with the stack
        self.files[columns].write(rows)


def _close_lanes(lanes: list[CopyLane], *, failed: bool) -> None:
    """Close every lane (its thread ended) before the connections are used again; raise the first
    error a lane hit, unless the load failed already (`failed`: abort them)."""
    errors: list[BaseException] = []
    for lane in lanes:
        try:
            lane.close(abort=failed or bool(errors))
        except BaseException as exc:  # noqa: BLE001 - raised below, once the other lane is closed too
            errors.append(exc)
    if errors and not failed:
        raise errors[0]


_Columned = tuple[tuple[str, ...], Batch]  # a batch and the column order of its rows


def _read_file(table: TableContract, path: Path, batch_id: int, covered: set[date] | None, take: Callable[[_Columned], None]) -> FileLoad:
    """Parse one file of a history load, handing each batch, with its column order, to `take`;
    return the file's counts (`covered`: see `CsvReader`)."""
    started = time.perf_counter()
    item = FileLoad(batch_id, path, size=_size(path))
    reader, handle = _open_reader(path, table, True, {"_batch_id": str(batch_id)}, covered)
    try:
        columns = (*reader.header.columns, "_line_number", "_partition_date", "_batch_id")
        for batch in reader.batches():
            take((columns, batch))
            item.rows_loaded += batch.rows
            item.rejected.extend(batch.rejected)
            item.days |= batch.days
    except OSError as exc:
        raise _read_failed(path, exc) from exc
    finally:
        if handle is not None:
            handle.close()
    item.seconds = time.perf_counter() - started
    return item


_ReadAhead = list[tuple[FileLoad, list[_Columned]]]


def _read_ahead(table: TableContract, files: list[tuple[Path, int]]) -> _ReadAhead:
    """Every file's batches, parsed before anything is sent (nothing held back: no day is covered yet)."""
    read: _ReadAhead = []
    for path, batch_id in files:
        batches: list[_Columned] = []
        read.append((_read_file(table, path, batch_id, None, batches.append), batches))
    return read


def _copy_history(
    table: TableContract,
    files: list[tuple[Path, int]],
    targets: _Targets,
    lanes: list[CopyLane],
    loaded: list[FileLoad],
    held: _Spools,
    ahead: _ReadAhead | None,
) -> None:
    """COPY the files' rows of covered days, each batch to its table (`_Targets`), through `lanes`:
    the load's own connection first, then (if any months are staged) the second one. Each lane
    keeps one COPY open per run of batches with the same table and column order, across files (a
    COPY per file cost more than a day's rows). The files of the two lanes are read in turns, so
    both servers stay busy. Rows held back go to `held`. `ahead`: the files read already. The
    lanes are closed on return."""
    main, side = lanes[0], lanes[-1]

    def send(columned: _Columned) -> None:
        columns, batch = columned
        if batch.deferred:
            held.write(columns, batch.deferred)
        if batch.payload:
            target = targets.of(batch)
            if target is None:
                held.write(columns, batch.payload)
            else:
                (side if target in targets.side_names else main).send(target, columns, batch.payload)

    failed = True
    try:
        if ahead is not None:
            for item, batches in ahead:
                for columned in batches:
                    send(columned)
                loaded.append(item)
        else:
            order = [f for f in files if not targets.on_side(f[0])], [f for f in files if targets.on_side(f[0])]
            for path, batch_id in (f for pair in itertools.zip_longest(*order) for f in pair if f is not None):
                loaded.append(_read_file(table, path, batch_id, targets.covered, send))
        failed = False
    finally:
        _close_lanes(lanes, failed=failed)

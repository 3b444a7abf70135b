"""Parquet input: record batches cast to text and written as COPY CSV by Arrow (no Python loop per row).

Values land as text like CSV values do (dates as ISO `YYYY-MM-DD`, numbers as written by Arrow),
so dbt staging casts both inputs the same way. Rows are numbered from 1.
"""

from __future__ import annotations

import io
import json
from collections.abc import Collection, Iterator
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ingest.contract import TableContract
from ingest.parse import Batch, ParsedHeader, Rejected, check_header
from mlp_common.exit_codes import ExitCode, StageError

BATCH_ROWS = 65_536


class ParquetReader:
    def __init__(
        self,
        path: Path,
        table: TableContract,
        partition_by_date: bool,
        constants: dict[str, str] | None = None,
        covered: Collection[date] | None = None,
    ) -> None:
        """As CsvReader's: `covered` (history loads) are the days that have a partition; other days'
        rows go to `Batch.deferred`."""
        try:
            self.file = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise StageError(f"{path}: not a readable Parquet file ({exc})", ExitCode.FILE_UNREADABLE) from exc
        if self.file.metadata.num_columns == 0:
            raise StageError(f"{path}: Parquet file has no columns", ExitCode.EMPTY_FILE)
        self.path = path
        self.table = table
        self.partition_by_date = partition_by_date
        self.constants = constants or {}
        self.covered = None if covered is None else pa.array(sorted(covered), pa.date32())
        names = self.file.schema_arrow.names
        self.header: ParsedHeader = check_header(names, table, path)
        self._source_names = names
        self.line_number = 0

    def batches(self) -> Iterator[Batch]:
        for record_batch in self.file.iter_batches(batch_size=BATCH_ROWS):
            yield self._batch(record_batch)

    def _batch(self, record_batch: pa.RecordBatch) -> Batch:
        n = record_batch.num_rows
        numbers = pa.array(range(self.line_number + 1, self.line_number + n + 1), pa.int64())
        self.line_number += n
        columns = [_as_text(record_batch.column(i)) for i in range(record_batch.num_columns)]
        names = list(self.header.columns)
        rejected: list[Rejected] = []
        dates = None
        if self.partition_by_date:
            dates = _as_date(columns[self.header.date_index])
            bad = pc.is_null(dates)
            if pc.any(bad).as_py():
                for index in pc.indices_nonzero(bad).to_pylist():
                    row = {name: columns[i][index].as_py() for i, name in enumerate(names)}
                    rejected.append(
                        Rejected(
                            int(numbers[index].as_py()),
                            f"unparseable {self.table.date_column} (a history load partitions rows by it)",
                            json.dumps(row).encode(),
                        )
                    )
                keep = pc.invert(bad)
                columns = [pc.filter(c, keep) for c in columns]
                numbers = pc.filter(numbers, keep)
                dates = pc.filter(dates, keep)
            out = pa.table([*columns, numbers, pc.cast(dates, pa.string())], names=[*names, "_line_number", "_partition_date"])
        else:
            out = pa.table([*columns, numbers], names=[*names, "_line_number"])
        for name, value in self.constants.items():
            out = out.append_column(name, pa.array([value] * out.num_rows, pa.string()))
        if dates is None:
            return Batch(_csv(out), out.num_rows, rejected)
        days = set(pc.unique(dates).to_pylist())
        if self.covered is None:
            return Batch(_csv(out), out.num_rows, rejected, days)
        covered = pc.is_in(dates, value_set=self.covered)
        return Batch(_csv(out.filter(covered)), out.num_rows, rejected, days, _csv(out.filter(pc.invert(covered))))


def _csv(table: pa.Table) -> bytes:
    if table.num_rows == 0:
        return b""
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return buffer.getvalue()


def _as_text(column: pa.Array) -> pa.Array:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column
    if pa.types.is_timestamp(column.type):
        column = pc.cast(column, pa.date32())
    try:
        return pc.cast(column, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise StageError(f"a Parquet column of type {column.type} cannot be read as text: {exc}", ExitCode.FILE_UNREADABLE) from exc


def _as_date(text: pa.Array) -> pa.Array:
    """ISO dates (or timestamps) to date32; anything else becomes null (and is rejected)."""
    head = pc.utf8_slice_codeunits(text, 0, 10)
    parsed = pc.strptime(head, format="%Y-%m-%d", unit="s", error_is_null=True)
    return pc.cast(parsed, pa.date32())

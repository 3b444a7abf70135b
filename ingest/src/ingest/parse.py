"""Turn a raw CSV or Parquet file into COPY payloads and rejected lines, accounting for every line.

The CSV fast path leaves well-formed lines untouched and lets PostgreSQL's own CSV parser (COPY)
do the work; Python only checks the field count, appends the line number (and, for a history
load, the partition date) and sets aside what COPY would choke on: lines that are not UTF-8, hold
a NUL byte or a stray carriage return, or have the wrong number of fields. Lines containing
quotes take a slower path through the `csv` module, which also joins quoted fields that span
several physical lines into one record.

Counting rule: a record is one physical line, except a quoted field with line breaks, which makes
its lines one record (numbered by its first line). The header is line 1 of a CSV file; Parquet
rows are numbered from 1.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import re
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import BinaryIO

from ingest.contract import TableContract
from mlp_common.exit_codes import ExitCode, StageError

CHUNK_BYTES = 4 << 20
MAX_RECORD_LINES = 200  # a quoted field longer than this many lines is an unterminated quote
BOM = b"\xef\xbb\xbf"
_ISO_DAY = re.compile(rb"^\d{4}-\d{2}-\d{2}")


@dataclass
class Rejected:
    line_number: int
    reason: str
    raw: bytes
    partition: date | None = None


@dataclass
class Batch:
    """One COPY payload (CSV rows in `columns` order) plus the lines set aside while building it.

    History loads: `days` are the dates of the rows; `deferred` holds the rows (same format) whose
    day has no partition yet, to be sent once it has one. `rows` counts both payloads' rows.
    """

    payload: bytes
    rows: int
    rejected: list[Rejected] = field(default_factory=list)
    days: set[date] = field(default_factory=set)
    deferred: bytes = b""


@dataclass
class _Rows:
    """What a line-by-line pass has built so far."""

    out: list[bytes] = field(default_factory=list)
    deferred: list[bytes] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    days: set[date] = field(default_factory=set)
    rows: int = 0

    def batch(self) -> Batch:
        return Batch(b"".join(self.out), self.rows, self.rejected, self.days, b"".join(self.deferred))


@dataclass
class ParsedHeader:
    columns: list[str]  # source columns, in the file's order
    date_index: int  # position of the table's date column


def check_header(names: list[str], table: TableContract, path: Path) -> ParsedHeader:
    """The file's columns must be exactly the contract's (any order, case and spaces ignored)."""
    cleaned = [n.strip().lower() for n in names]
    expected = set(table.columns)
    missing = [c for c in table.columns if c not in cleaned]
    unknown = [c for c in cleaned if c not in expected]
    duplicated = sorted({c for c in cleaned if cleaned.count(c) > 1})
    if missing or unknown or duplicated:
        problems = []
        if missing:
            problems.append(f"missing {', '.join(missing)}")
        if unknown:
            problems.append(f"unexpected {', '.join(repr(u) for u in unknown)}")
        if duplicated:
            problems.append(f"duplicated {', '.join(duplicated)}")
        raise StageError(
            f"{path}: header does not match the {table.name} contract ({'; '.join(problems)}); expected {','.join(table.columns)}",
            ExitCode.HEADER_MISMATCH,
        )
    return ParsedHeader(columns=cleaned, date_index=cleaned.index(table.date_column))


class _DayCache(dict[bytes, "date | None"]):
    """Parsed partition dates by raw text: a history load sees few distinct dates, parse each once."""

    def __missing__(self, raw: bytes) -> date | None:
        value: date | None = None
        text = raw.strip().strip(b'"')
        if _ISO_DAY.match(text) and (len(text) == 10 or text[10:11] in (b"T", b" ")):
            try:
                value = date.fromisoformat(text[:10].decode())
            except ValueError:
                value = None
        self[raw] = value
        return value


class CsvReader:
    """Streams one CSV file as COPY batches. `partition_by_date`: history mode (each row's own date)."""

    def __init__(
        self,
        handle: BinaryIO,
        path: Path,
        table: TableContract,
        partition_by_date: bool,
        constants: bytes = b"",
        covered: Container[date] | None = None,
    ) -> None:
        """`constants`: CSV text appended to every row after its line number (and, for a history load,
        its partition date): the load metadata that is the same for the whole file. `covered`
        (history loads): the days that have a partition; other days' rows go to `Batch.deferred`."""
        self.handle = handle
        self.constants = constants
        self.covered = covered
        self.path = path
        self.table = table
        self.partition_by_date = partition_by_date
        self.days = _DayCache()
        self.header = self._read_header()
        self.width = len(self.header.columns)
        self.commas = self.width - 1
        self.line_number = 1  # the header

    def _read_header(self) -> ParsedHeader:
        first = self.handle.readline()
        if not first.strip(BOM + b" \t\r\n"):
            raise StageError(f"{self.path}: file is empty (no header line)", ExitCode.EMPTY_FILE)
        first = first.removeprefix(BOM).rstrip(b"\r\n")
        try:
            text = first.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StageError(f"{self.path}: header is not valid UTF-8", ExitCode.HEADER_MISMATCH) from exc
        try:
            names = next(csv.reader([text]), [])
        except csv.Error as exc:  # e.g. a bare carriage return inside the header line
            raise StageError(f"{self.path}: header line is not valid CSV ({exc})", ExitCode.HEADER_MISMATCH) from exc
        return check_header(names, self.table, self.path)

    def batches(self) -> Iterator[Batch]:
        tail = b""
        pending: list[bytes] = []  # physical lines of a quoted record that spans lines
        while True:
            chunk = self.handle.read(CHUNK_BYTES)
            if not chunk:
                break
            data = tail + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                tail = data
                continue
            tail = data[cut + 1 :]
            yield self._batch(data[:cut], pending)
        if tail:
            yield self._careful([tail], pending)
        while pending:  # end of file inside a quoted field
            yield self._unterminated(pending)

    def _batch(self, block: bytes, pending: list[bytes]) -> Batch:
        if pending or not self._is_clean(block):
            return self._careful(block.split(b"\n"), pending)
        return self._fast_block(block)

    @staticmethod
    def _is_clean(block: bytes) -> bool:
        if b'"' in block or b"\x00" in block:
            return False
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True

    def _fast_block(self, block: bytes) -> Batch:
        """Daily load of a clean block (no quotes, NULs or bad UTF-8): no per-line Python work but a
        comma count. Runs of good lines get their line numbers appended by one bytes %-format per
        run; the few bad lines are set aside. (numpy was tried for the counting: its import alone
        cost more than the counting saves.)"""
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n").removesuffix(b"\r")
            if b"\r" in block:
                return self._fast(block.split(b"\n"))  # stray carriage returns: line by line
        if self.partition_by_date:
            return self._fast_day_block(block)
        lines = block.split(b"\n")
        commas = self.commas
        bad = [i for i, count in enumerate([line.count(b",") for line in lines]) if count != commas or not lines[i]]
        first = self.line_number + 1
        self.line_number += len(lines)
        rejected = [self._reject_shape(first + i, lines[i]) for i in bad]
        pieces = []
        for before, after in itertools.pairwise([-1, *bad, len(lines)]):
            a, b = before + 1, after  # good lines a .. b-1
            if a < b:
                segment = block if not bad else b"\n".join(lines[a:b])
                pieces.append(_numbered(segment, first + a, b - a, self.constants))
        return Batch(b"".join(pieces), len(lines) - len(bad), rejected)

    def _fast_day_block(self, block: bytes) -> Batch:
        """History load of a clean block whose lines all have the contract's field count and one
        date (a day's file): the daily fast path, that date a constant like the batch id. Any
        other block goes line by line."""
        count = block.count(b"\n") + 1
        day = _uniform_field(block, count, self.width, self.header.date_index)
        if day is None or (parsed := self.days[day]) is None:
            return self._mixed_days(block, count) or self._fast(block.split(b"\n"))
        first = self.line_number + 1
        self.line_number += count
        payload = _numbered(block, first, count, b"," + parsed.isoformat().encode() + self.constants)
        if self.covered is not None and parsed not in self.covered:
            return Batch(b"", count, [], {parsed}, payload)
        return Batch(payload, count, [], {parsed})

    def _mixed_days(self, block: bytes, count: int) -> Batch | None:
        """History load of a clean block of several dates (an export not split by day, the
        customers of a first snapshot) whose lines all have the contract's field count and a
        readable date; else None (the caller goes line by line, which sets the bad lines aside).
        One regular-expression pass finds every line's date, one format per line builds the rows:
        a third of the line-by-line cost."""
        if block.translate(None, _NOT_DELIMITER) != (b"," * self.commas + b"\n") * (count - 1) + b"," * self.commas:
            return None  # a line with another field count (or a blank one)
        texts = _field_pattern(self.header.date_index).findall(block)
        parsed: dict[bytes, date] = {}
        for text in set(texts):
            if (day := self.days[text]) is None:
                return None
            parsed[text] = day
        if len(texts) != count:
            return None
        tails = {text: b",%s%s\n" % (day.isoformat().encode(), self.constants) for text, day in parsed.items()}
        first = self.line_number + 1
        self.line_number += count
        rows = [b"%s,%d%s" % (line, number, tails[text]) for line, number, text in zip(block.split(b"\n"), itertools.count(first), texts)]
        days = set(parsed.values())
        covered = self.covered
        if covered is None or all(day in covered for day in days):
            return Batch(b"".join(rows), count, [], days)
        held = [parsed[text] not in covered for text in texts]
        out = b"".join(row for row, later in zip(rows, held, strict=True) if not later)
        return Batch(out, count, [], days, b"".join(row for row, later in zip(rows, held, strict=True) if later))

    def _fast(self, lines: list[bytes]) -> Batch:
        """Clean lines, one by one (history loads of lines with different dates)."""
        start = self.line_number + 1
        self.line_number += len(lines)
        built = _Rows()
        commas = self.commas
        for number, line in enumerate(lines, start):
            if line.endswith(b"\r"):
                line = line[:-1]
            if line.count(b",") != commas or b"\r" in line or not line:
                built.rejected.append(self._reject_shape(number, line))
                continue
            self._emit(line, number, line.split(b",", self.width)[self.header.date_index] if self.partition_by_date else b"", built)
        return built.batch()

    def _emit(self, line: bytes, number: int, date_text: bytes, built: _Rows) -> None:
        """One good record's COPY row (with its partition date, for a history load)."""
        if not self.partition_by_date:
            built.out.append(b"%s,%d%s\n" % (line, number, self.constants))
        elif (day := self.days[date_text]) is None:
            built.rejected.append(self._reject_date(number, line))
            return
        else:
            built.days.add(day)
            target = built.out if self.covered is None or day in self.covered else built.deferred
            target.append(b"%s,%d,%s%s\n" % (line, number, day.isoformat().encode(), self.constants))
        built.rows += 1

    def _reject_shape(self, number: int, line: bytes) -> Rejected:
        if not line.strip():
            return Rejected(number, "blank line", line)
        if b"\r" in line:
            return Rejected(number, "stray carriage return inside a line", line)
        found = line.count(b",") + 1
        return Rejected(number, f"expected {self.width} fields, found {found}", line)

    def _reject_date(self, number: int, line: bytes) -> Rejected:
        column = self.table.date_column
        return Rejected(number, f"unparseable {column} (a history load partitions rows by it)", line)

    def _careful(self, lines: list[bytes], pending: list[bytes]) -> Batch:
        built = _Rows()
        for line in lines:
            self.line_number += 1
            if pending:
                pending.append(line)
                record = b"\n".join(pending)
                if _quotes_balanced(record):
                    self._take_record(record, self.line_number - len(pending) + 1, built)
                    pending.clear()
                elif len(pending) >= MAX_RECORD_LINES:
                    nested = self._unterminated(pending)
                    built.out.append(nested.payload)
                    built.deferred.append(nested.deferred)
                    built.rejected.extend(nested.rejected)
                    built.days |= nested.days
                    built.rows += nested.rows
                continue
            if b'"' in line and not _quotes_balanced(line):
                pending.append(line)  # a quoted field goes on: its line break (\r\n too) is data
                continue
            self._take_record(line, self.line_number, built)
        return built.batch()

    def _take_record(self, record: bytes, number: int, built: _Rows) -> None:
        """Add the record's COPY row to `built`, or the record to its rejected lines."""
        rejected = built.rejected
        record = record.removesuffix(b"\r")
        try:
            text = record.decode("utf-8")
        except UnicodeDecodeError:
            rejected.append(Rejected(number, "not valid UTF-8", record))
            return
        if "\x00" in text:
            rejected.append(Rejected(number, "NUL byte in line", record))
            return
        if not text.strip():
            rejected.append(Rejected(number, "blank line", record))
            return
        if '"' not in text:
            if "\r" in text:
                rejected.append(Rejected(number, "stray carriage return inside a line", record))
                return
            fields = text.split(",")
        else:
            try:
                parsed = list(csv.reader(io.StringIO(text, newline="")))
            except csv.Error as exc:  # e.g. a quoted field over the csv module's field size limit
                rejected.append(Rejected(number, f"unparseable CSV record ({exc})", record))
                return
            if len(parsed) > 1:  # a quote inside an unquoted field is text to the csv module: the line break ended its record
                rejected.append(Rejected(number, "quote inside an unquoted field", record))
                return
            fields = parsed[0] if parsed else []
        if len(fields) != self.width:
            rejected.append(Rejected(number, f"expected {self.width} fields, found {len(fields)}", record))
            return
        line = record if '"' not in text and "\r" not in text else _csv_line(fields)
        date_text = fields[self.header.date_index].encode() if self.partition_by_date else b""
        if self.partition_by_date and self.days[date_text] is None:
            rejected.append(self._reject_date(number, record))  # the record as read, not as re-quoted
            return
        self._emit(line, number, date_text, built)

    def _unterminated(self, pending: list[bytes]) -> Batch:
        """Reject the line that opened a quote never closed; re-read the lines after it as records."""
        first, rest = pending[0], pending[1:]
        number = self.line_number - len(pending) + 1
        pending.clear()
        self.line_number -= len(rest)
        batch = self._careful(rest, pending)
        batch.rejected.insert(0, Rejected(number, "unterminated quoted field", first))
        return batch


def _numbered(lines: bytes, first: int, count: int, constants: bytes) -> bytes:
    """`count` newline-separated lines, each followed by its line number (from `first`) and
    `constants`, as COPY rows: one bytes %-format for them all, no Python loop per line."""
    tail = b",%d" + constants.replace(b"%", b"%%") + b"\n"
    return (lines.replace(b"%", b"%%").replace(b"\n", tail) + tail) % tuple(range(first, first + count))


_NOT_DELIMITER = bytes(b for b in range(256) if b not in b",\n")


@functools.cache
def _field_pattern(index: int) -> re.Pattern[bytes]:
    """Field `index` of every line of an unquoted CSV block (the lines' fields counted already)."""
    return re.compile(rb"^(?:[^,\n]*,){%d}([^,\n]*)" % index, re.MULTILINE)


_MARK = b"\x01"  # stands in for the shared value in `_uniform_field`; a block holding it goes line by line
_NOT_SHAPE = bytes(b for b in range(256) if b not in b",\n\x01")


def _uniform_field(block: bytes, lines: int, width: int, index: int) -> bytes | None:
    """Field `index` of every line of an unquoted CSV block, if all `lines` lines have exactly
    `width` fields and share that value; else None.

    Four passes of bytes methods, in C, no call per line: the first line gives the value; each
    occurrence of it as a whole field becomes as many marker bytes; deleting every byte but commas,
    newlines and markers leaves each line's shape, which must be the same on every line: `width`
    fields with the markers in field `index`. (Arrow's CSV parser did this at ~1.5 x the cost, and
    its import cost ~0.15 s of every history load.) A value that occurs in other fields as well
    can only give a shape that does not match: the answer may be None when it could have been the
    value (the caller then goes line by line), never the value when it is not."""
    if width < 2 or _MARK in block:
        return None
    end = block.find(b"\n")
    fields = (block if end < 0 else block[:end]).split(b",")
    if len(fields) != width:
        return None
    value = fields[index]
    if not value:  # nothing to mark: an empty field, never a date
        return None
    before = b"," if index > 0 else b"\n"
    after = b"," if index < width - 1 else b"\n"
    marks = _MARK * len(value)  # as long as the value: the replacement is done in place
    shape = (b"\n" + block + b"\n").replace(before + value + after, before + marks + after).translate(None, _NOT_SHAPE)
    line_shape = b"," * index + marks + b"," * (width - 1 - index) + b"\n"
    return value if shape == b"\n" + line_shape * lines else None


def _quotes_balanced(data: bytes) -> bool:
    return data.count(b'"') % 2 == 0


_NEEDS_QUOTES = re.compile(r'[,"\r\n]|^\\\.$')


def _csv_line(fields: list[str]) -> bytes:
    """Re-serialise parsed fields for COPY (FORMAT csv): quote what needs quoting, keep empties NULL."""
    return ",".join('"' + f.replace('"', '""') + '"' if _NEEDS_QUOTES.search(f) else f for f in fields).encode("utf-8")

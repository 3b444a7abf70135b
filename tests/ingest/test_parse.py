"""The CSV reader of a history load: the whole-block fast path (one date per block, checked by
`_uniform_field`) must give exactly what the line-by-line path gives, line numbers included."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.contract import TABLES
from ingest.parse import CsvReader, _uniform_field
from tests.ingest.helpers import TX_HEADER

TABLE = TABLES["transactions"]
DAYS = ["2024-03-05", "2024-03-06", "2024-04-01"]


def read(text: str, covered: set[date] | None = None) -> tuple[list[str], list[str], list[tuple[int, str]], set[date]]:
    """Landed rows, held-back rows, rejected (line, reason) and days of one file read in history mode."""
    reader = CsvReader(io.BytesIO(text.encode()), Path("f.csv"), TABLE, True, b",77", covered)
    landed: list[str] = []
    deferred: list[str] = []
    rejected: list[tuple[int, str]] = []
    days: set[date] = set()
    rows = 0
    for batch in reader.batches():
        landed += batch.payload.decode().splitlines()
        deferred += batch.deferred.decode().splitlines()
        rejected += [(r.line_number, r.reason) for r in batch.rejected]
        days |= batch.days
        rows += batch.rows
    assert rows == len(landed) + len(deferred)
    return landed, deferred, rejected, days


def expected(lines: list[str]) -> tuple[list[str], list[int]]:
    """What a line-by-line reading must land (with line number, date and batch id) and reject."""
    landed, rejected = [], []
    for number, line in enumerate(lines, 2):
        fields = line.split(",")
        if len(fields) != 6 or fields[3] not in DAYS:
            rejected.append(number)
        else:
            landed.append(f"{line},{number},{fields[3]},77")
    return landed, rejected


def tx(i: int, day: str) -> str:
    return f"T{i},C{i % 7},{i}.5,{day},grocery,M{i % 3}"


def test_a_day_file_goes_the_block_path_with_its_date_a_constant():
    lines = [tx(i, DAYS[0]) for i in range(500)]
    line_by_line = mock.patch.object(CsvReader, "_fast", side_effect=AssertionError("went line by line"))
    with line_by_line:
        landed, deferred, rejected, days = read("\n".join([TX_HEADER, *lines]) + "\n")
    assert (landed, deferred, rejected, days) == (expected(lines)[0], [], [], {date(2024, 3, 5)})


def test_one_bad_line_or_a_second_date_sends_the_block_line_by_line():
    lines = [tx(i, DAYS[0]) for i in range(10)] + ["T99,C1,1.0,home"] + [tx(i, DAYS[1]) for i in range(10, 20)] + ["", "x,y,z,nope,a,b"]
    landed, _, rejected, days = read("\n".join([TX_HEADER, *lines]) + "\n")
    want_landed, want_rejected = expected(lines)
    assert landed == want_landed and [n for n, _ in rejected] == want_rejected
    assert days == {date(2024, 3, 5), date(2024, 3, 6)}


def test_rows_of_days_without_a_partition_are_held_back_with_their_line_numbers():
    lines = [tx(i, DAYS[0]) for i in range(5)] + [tx(i, DAYS[2]) for i in range(5, 8)]
    landed, deferred, _, _ = read("\n".join([TX_HEADER, *lines]), covered={date(2024, 3, 5)})
    assert landed == expected(lines[:5])[0]
    assert deferred == [f"{line},{n},{DAYS[2]},77" for n, line in enumerate(lines[5:], 7)]
    # a whole block of an uncovered day is held back too
    landed, deferred, _, _ = read("\n".join([TX_HEADER, *lines[5:]]), covered={date(2024, 3, 5)})
    assert landed == [] and len(deferred) == 3


line = st.one_of(
    st.builds(tx, st.integers(0, 10**6), st.sampled_from(DAYS)),
    st.sampled_from(["", "T1,C1,1.0,2024-13-45,home,M1", "T1,C1,1.0,home", "T1,C1,1.0,2024-03-05,home,M1,extra", "a,b,c,d,e,f"]),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(DAYS), min_size=1, max_size=3),
    st.lists(line, max_size=40),
    st.integers(1, 30),
    st.integers(16, 2000),
    st.randoms(use_true_random=False),
)
def test_any_file_reads_as_line_by_line_would(block_days, noise, size, chunk, random):
    """Uniform runs (the block path's case) and noise (its fallback's), in blocks of any size."""
    lines = [tx(i, day) for day in block_days for i in range(size)]
    for item in noise:
        lines.insert(random.randint(0, len(lines)), item)
    with mock.patch("ingest.parse.CHUNK_BYTES", chunk):
        landed, deferred, rejected, _ = read("\n".join([TX_HEADER, *lines]) + "\n")
    want_landed, want_rejected = expected(lines)
    assert deferred == []
    assert landed == want_landed
    assert [n for n, _ in rejected] == want_rejected


def uniform_by_splitting(block: bytes, width: int, index: int) -> bytes | None:
    """`_uniform_field`'s definition, line by line."""
    rows = [line.split(b",") for line in block.split(b"\n")]
    values = {row[index] for row in rows if len(row) == width}
    return values.pop() if all(len(row) == width for row in rows) and len(values) == 1 else None


VALUES = [b"2024-03-05", b"2024-03-0", b"024-03-05", b"x", b"", b"\x01", b"2024-03-05 10:00"]


@settings(max_examples=1500, deadline=None)
@given(st.integers(2, 5), st.data())
def test_the_block_check_answers_as_splitting_every_line_would(width, data):
    """Lines built from a few values, the block's own value among them in any field (and lines of
    other widths): the check may miss a uniform block (the reader then goes line by line) but must
    never call a block uniform that is not, nor give another value."""
    index = data.draw(st.integers(0, width - 1))
    line = st.lists(st.sampled_from(VALUES), min_size=width - 1, max_size=width + 1).map(b",".join)
    lines = data.draw(st.lists(line, min_size=1, max_size=12))
    block = b"\n".join(lines)
    got = _uniform_field(block, len(lines), width, index)
    want = uniform_by_splitting(block, width, index)
    assert got is None or got == want
    if want and b"\x01" not in block and all(line.split(b",").count(want) == 1 for line in lines):
        assert got == want  # the value in its own field only: the check finds it


def test_a_day_block_is_found_uniform_whatever_the_date_column():
    for index in range(6):
        lines = [b",".join(b"2024-03-05" if i == index else b"v%d" % (n + i) for i in range(6)) for n in range(50)]
        assert _uniform_field(b"\n".join(lines), 50, 6, index) == b"2024-03-05"
        lines[17] = lines[17].replace(b"2024-03-05", b"2024-03-06")
        assert _uniform_field(b"\n".join(lines), 50, 6, index) is None
    assert _uniform_field(b"a,,c\nd,e,f", 2, 3, 1) is None  # an empty first value marks nothing


def read_line_by_line(text: str, covered: set[date] | None = None) -> tuple[list[str], list[str], list[tuple[int, str]], set[date]]:
    with mock.patch.object(CsvReader, "_mixed_days", return_value=None):
        return read(text, covered)


def test_a_clean_block_of_several_days_is_read_in_one_pass_not_line_by_line():
    lines = [tx(i, DAYS[i % 3]) for i in range(300)]
    text = "\n".join([TX_HEADER, *lines]) + "\n"
    covered = {date(2024, 3, 5), date(2024, 3, 6)}
    with mock.patch.object(CsvReader, "_fast", side_effect=AssertionError("went line by line")):
        landed, deferred, rejected, days = read(text, covered)
    want = expected(lines)[0]
    assert landed == [row for row in want if row.split(",")[3] != DAYS[2]]
    assert deferred == [row for row in want if row.split(",")[3] == DAYS[2]]
    assert (rejected, days) == ([], {date(2024, 3, 5), date(2024, 3, 6), date(2024, 4, 1)})


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([*DAYS, "2024-03-05 10:00", "2024-03-06T23:59:59", "2024-13-45", "nope", ""]), min_size=1, max_size=60),
    st.sets(st.sampled_from([date(2024, 3, 5), date(2024, 3, 6), date(2024, 4, 1)])) | st.none(),
    st.integers(16, 3000),
)
def test_a_block_of_several_days_reads_as_line_by_line_would(days, covered, chunk):
    """Dates that differ, some written as timestamps, some unreadable, any covered days and block
    size: the one-pass reading lands, holds back and rejects exactly what line by line does."""
    lines = [tx(i, day) for i, day in enumerate(days)]
    text = "\n".join([TX_HEADER, *lines]) + "\n"
    with mock.patch("ingest.parse.CHUNK_BYTES", chunk):
        assert read(text, covered) == read_line_by_line(text, covered)

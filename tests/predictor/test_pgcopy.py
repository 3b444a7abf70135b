"""predictor.pgcopy against a real PostgreSQL: what the server sends decodes to what it holds, what
we encode loads as what we meant, and bytes that are not the expected rows are refused."""

from __future__ import annotations

import threading
import time

import numpy as np
import psycopg
import pytest

from predictor import pgcopy

MISSING = "__missing__"
# NULL, the empty string, multi-byte UTF-8, lengths on both sides of the 8-byte fast path, a value
# that is the NULL marker's text, commas, quotes and newlines (harmless in binary, fatal in naive CSV)
TEXTS = [None, "", "north", "é", "日本語", "exactly8", "longer than eight bytes", MISSING, 'a,"b"\nc', "north", None]
FLOATS = [1.5, None, -0.0, 1e30, float("nan"), 3.25, None, 7.0, -2.5, 0.1, 42.0]


@pytest.fixture()
def values_table(db: psycopg.Connection) -> str:
    db.execute("create table pgcopy_values (id text, x float8, label text)")
    with db.cursor() as cur:
        cur.executemany(
            "insert into pgcopy_values values (%s, %s, %s)",
            [(f"id-{'x' * i}{i}", x, t) for i, (x, t) in enumerate(zip(FLOATS, TEXTS, strict=True))],
        )
    return "pgcopy_values"


def _read(db: psycopg.Connection, query: str, block_bytes: int = 1 << 20) -> list[pgcopy.RowBlock]:
    with db.cursor() as cur, cur.copy(f"copy ({query}) to stdout (format binary)") as copy:
        return list(pgcopy.read_blocks(copy, block_bytes))


@pytest.mark.parametrize("block_bytes", [1, 64, 1 << 20])  # a block per row, a few rows, everything
def test_decodes_what_the_server_holds(db: psycopg.Connection, values_table: str, block_bytes: int) -> None:
    blocks = [pgcopy.split_fields(b, 3) for b in _read(db, f'select id, x, label from {values_table} order by id collate "C"', block_bytes)]
    assert sum(len(b) for b in blocks) == len(TEXTS) and (block_bytes > 64 or len(blocks) > 1)
    x = np.concatenate([pgcopy.float8_column(b, 1) for b in blocks])
    labels = np.concatenate([pgcopy.text_categories(b.column(2), MISSING) for b in blocks]).tolist()
    ids = [bytes(b.data[p : p + n]).decode() for b in blocks for p, n in zip(b.positions[0], b.lengths[0], strict=True)]
    expected = sorted((f"id-{'x' * i}{i}", x, t) for i, (x, t) in enumerate(zip(FLOATS, TEXTS, strict=True)))
    assert ids == [e[0] for e in expected]
    assert labels == [MISSING if e[2] is None else e[2] for e in expected]
    want = np.array([np.nan if e[1] is None else e[1] for e in expected], dtype=np.float32)
    assert x.dtype == np.float32 and np.array_equal(x, want, equal_nan=True)


def test_text_categories_build_one_string_per_distinct_value(db: psycopg.Connection) -> None:
    (block,) = _read(db, "select (array['basic', 'premium', null])[1 + g % 3] from generate_series(1, 3000) as g")
    values = pgcopy.text_categories(pgcopy.split_fields(block, 1).column(0), MISSING)
    assert values.tolist() == [["basic", "premium", None][g % 3] or MISSING for g in range(1, 3001)]
    assert len({id(v) for v in values}) == 3


def test_an_empty_result_has_no_blocks(db: psycopg.Connection) -> None:
    assert _read(db, "select 1::float8 where false") == []


def test_encoded_rows_load_as_meant(db: psycopg.Connection) -> None:
    ids = ["c1", "customer-0002", "日本", "", "c5"]
    text = pgcopy.text_column(ids, np.arange(len(ids)))
    p = np.array([0.1, 0.5, 0.9, 0.0, 1.0], dtype=np.float32)
    bands = pgcopy.text_column(("low", "medium", "high"), np.array([0, 1, 2, 0, 2]))
    db.execute("create table pgcopy_out (customer_id text, p float8, band text, n bigint)")
    with db.cursor() as cur, cur.copy("copy pgcopy_out from stdin (format binary)") as copy:
        rows = pgcopy.encode_rows([text, p.astype(">f8"), bands, np.arange(5, dtype=">i8")])
        copy.write(pgcopy.HEADER + rows.tobytes() + pgcopy.TRAILER)
    got = db.execute("select customer_id, p, band, n from pgcopy_out order by n").fetchall()
    assert got == [(ids[i], float(p[i]), ("low", "medium", "high", "low", "high")[i], i) for i in range(5)]
    assert pgcopy.encode_rows([np.empty(0, dtype=">f8")]).size == 0


def test_bytes_that_are_not_the_expected_rows_are_refused(db: psycopg.Connection, values_table: str) -> None:
    (block,) = _read(db, f"select id, x, label from {values_table}")
    with pytest.raises(pgcopy.CopyFormatError, match="does not have 2 fields"):
        pgcopy.split_fields(block, 2)
    (block,) = _read(db, f"select id, label from {values_table}")
    fields = pgcopy.split_fields(block, 2)
    with pytest.raises(pgcopy.CopyFormatError, match="not float8"):
        pgcopy.float8_column(fields, 0)
    cut = pgcopy.RowBlock(block.data, block.starts, block.ends - 1)  # every row one byte short
    with pytest.raises(pgcopy.CopyFormatError):
        pgcopy.split_fields(cut, 2)
    with pytest.raises(pgcopy.CopyFormatError, match="no NULLs"):
        pgcopy.encode_rows([fields.column(1)])


def test_read_ahead_keeps_order_raises_the_producers_error_and_stops_early() -> None:
    def blocks(fail_at: int | None = None):  # stand-ins: read_ahead never looks inside a block
        for i in range(10):
            if i == fail_at:
                raise psycopg.OperationalError("server closed the connection")
            yield i

    assert list(pgcopy.read_ahead(blocks())) == list(range(10))  # type: ignore[arg-type]
    got = []
    with pytest.raises(psycopg.OperationalError, match="server closed"):
        for b in pgcopy.read_ahead(blocks(fail_at=5)):  # type: ignore[arg-type]
            got.append(b)
    assert got == [0, 1, 2, 3, 4]
    produced = []

    def counted():
        for i in range(1000):
            produced.append(i)
            yield i

    ahead = pgcopy.read_ahead(counted(), depth=2)  # type: ignore[arg-type]
    assert next(ahead) == 0
    ahead.close()  # the consumer stops early: the worker ends instead of reading everything
    assert len(produced) < 10


def test_waiting_for_the_server_does_not_hold_the_gil(db: psycopg.Connection) -> None:
    """Rows that arrive slowly (a 100 kB row every 0.5 s): while the reader waits for them, the other
    threads (scoring, writing) keep running. A blocking libpq call would hold the GIL for each 0.5 s."""
    query = "select repeat('x', 100000), pg_sleep(0.5) from generate_series(1, 3)"
    done: list[int] = []
    reader = threading.Thread(target=lambda: done.append(sum(len(b) for b in _read(db, query, block_bytes=1))))
    longest_stall, last = 0.0, time.monotonic()
    reader.start()
    while reader.is_alive():
        time.sleep(0.001)
        now = time.monotonic()
        longest_stall, last = max(longest_stall, now - last), now
    assert done == [3]
    assert longest_stall < 0.25, f"the main thread stood still for {longest_stall:.2f} s while the reader waited"

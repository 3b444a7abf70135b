"""The ingest stage against a real PostgreSQL: lossless, idempotent, concurrent, strict about bad input."""

from __future__ import annotations

import concurrent.futures
import os
import time
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlp_common.exit_codes import ExitCode
from mlp_common.warehouse import lock_for_transaction
from tests.db_helpers import conninfo, embedded_superuser
from tests.ingest.helpers import CUSTOMER_HEADER, TX_HEADER, rows, stage_tables, write_day

pytestmark = pytest.mark.integration

DAY = "2024-03-05"


def tx_lines(n: int, day: str = DAY, start: int = 1) -> list[str]:
    return [f"T{i:06d},C{i % 7:03d},{10 + i % 50}.25,{day},grocery,M{i % 9:02d}" for i in range(start, start + n)]


def tx_file(lines: list[str], newline: str = "\n") -> str:
    return newline.join([TX_HEADER, *lines]) + newline


@pytest.fixture
def history_load(warehouse, monkeypatch):  # type: ignore[no-untyped-def]
    """A history load of a folder, run in this process. `streamed`: every table is streamed, as a
    big one is (the tests' tables are far below `READ_AHEAD_BYTES`, so they are read whole first
    unless told otherwise)."""
    from ingest import load as loading

    def run(source: Path, *, streamed: bool) -> None:
        with monkeypatch.context() as patch, psycopg.connect(conninfo(warehouse), autocommit=True) as conn:
            if streamed:
                patch.setattr(loading, "READ_AHEAD_BYTES", 0)
            loading.load(conn, loading.history_files(source, None), ds=None)

    return run


def test_daily_load_lands_every_line_with_metadata(landing, run_ingest, db):
    write_day(landing, "transactions", DAY, tx_file(tx_lines(25)))
    run = run_ingest("load", "--ds", DAY, "--source", str(landing))
    assert run.code == 0, run.stderr
    assert run.result is not None
    assert (run.result["rows_read"], run.result["rows_loaded"], run.result["rows_rejected"]) == (25, 25, 0)
    landed = rows(
        db, "select _partition_date::text, min(_line_number), max(_line_number), count(distinct _batch_id) from raw.transactions group by 1"
    )
    assert landed == [(DAY, 2, 26, 1)]
    lineage = rows(
        db,
        """
        select b.source_file, b.rows_loaded, count(*)
        from raw.transactions as t inner join raw.load_batches as b on b.batch_id = t._batch_id
        group by 1, 2
        """,
    )
    assert [(Path(f).name, loaded, n) for f, loaded, n in lineage] == [(f"{DAY}.csv", 25, 25)]


def test_reload_of_a_date_replaces_it_and_leaves_other_dates(landing, run_ingest, db):
    write_day(landing, "transactions", DAY, tx_file(tx_lines(10)))
    write_day(landing, "transactions", "2024-03-06", tx_file(tx_lines(4, "2024-03-06", start=100)))
    assert run_ingest("load", "--ds", DAY, "--source", str(landing)).code == 0
    assert run_ingest("load", "--ds", "2024-03-06", "--source", str(landing)).code == 0
    first = rows(db, "select transaction_id, amount from raw.transactions order by 1")
    assert run_ingest("load", "--ds", DAY, "--source", str(landing)).code == 0
    assert rows(db, "select transaction_id, amount from raw.transactions order by 1") == first
    write_day(landing, "transactions", DAY, tx_file(tx_lines(3)))  # the source re-sent a corrected, shorter day
    assert run_ingest("load", "--ds", DAY, "--source", str(landing)).code == 0
    assert rows(db, "select _partition_date::text, count(*) from raw.transactions group by 1 order by 1") == [(DAY, 3), ("2024-03-06", 4)]
    assert rows(db, "select count(*), count(distinct source_file) from raw.load_batches") == [(4, 2)]


def test_every_planted_defect_is_landed_or_rejected_and_counted(landing, run_ingest, db):
    lines = [
        "T1,C001,12.50,2024-03-05,grocery,M01",  # clean
        "T2,C001,0.00,2024-03-05,grocery,M01",  # zero amount: landed, dbt excludes it
        "T3,,5.00,2024-03-05,grocery,M01",  # blank customer: landed (NULL), dbt excludes it
        "T4,   ,5.00,2024-03-05,grocery,M01",  # whitespace customer: landed
        "T5,C002,-7.10,2024-03-05,home,M02",  # a return: landed
        "T6,C002,7.10,2024-13-45,home,M02",  # unparseable date: landed as text, dbt excludes it
        "T7,C002,7.10,2031-01-01,home,M02",  # future date: landed
        "T8,C003,  GROCERY ,2024-03-05,  Grocery ,M03",  # odd case and spaces: landed as is
        "T1,C001,12.50,2024-03-05,grocery,M01",  # re-sent row: landed, dbt de-duplicates
        "T9,C003,1.00,2024-03-05,grocery",  # too few fields: rejected
        "T10,C003,1.00,2024-03-05,grocery,M01,extra",  # too many fields: rejected
    ]
    content = tx_file(lines).encode() + b"T11,C004,3.00,2024-03-05,caf\xe9,M01\n" + b"T12,C004,3.00,2024-03-05,gro\x00cery,M01\n"
    write_day(landing, "transactions", DAY, content)
    run = run_ingest("load", "--ds", DAY, "--source", str(landing))
    assert run.code == 0, run.stderr
    assert run.result["rows_read"] == 13 == run.result["rows_loaded"] + run.result["rows_rejected"]
    assert run.result["rows_loaded"] == 9
    reasons = dict(rows(db, "select reason, count(*) from raw.transactions_rejected group by 1"))
    assert reasons == {"expected 6 fields, found 5": 1, "expected 6 fields, found 7": 1, "not valid UTF-8": 1, "NUL byte in line": 1}
    raw_lines = [bytes(r[0]) for r in rows(db, "select raw_line from raw.transactions_rejected order by _line_number")]
    assert raw_lines[2] == b"T11,C004,3.00,2024-03-05,caf\xe9,M01"  # the bytes as they came
    landed = dict(rows(db, "select _line_number, customer_id from raw.transactions where transaction_id in ('T3', 'T4')"))
    assert landed == {4: None, 5: "   "}


def test_crlf_quotes_embedded_newlines_and_bom(landing, run_ingest, db):
    body = (
        "\ufeff" + TX_HEADER + "\r\n"
        'T1,C001,"1,234.50",2024-03-05,"home, garden",M01\r\n'
        'T2,C001,3.00,2024-03-05,"say ""hi""",M01\r\n'
        'T3,C001,3.00,2024-03-05,"two\r\nlines",M01\r\n'
        "T4,C001,3.00,2024-03-05,plain,M01\r\n"
    )
    write_day(landing, "transactions", DAY, body)
    run = run_ingest("load", "--ds", DAY, "--source", str(landing))
    assert run.code == 0, run.stderr
    assert (run.result["rows_loaded"], run.result["rows_rejected"]) == (4, 0)
    got = rows(db, "select transaction_id, amount, category, _line_number from raw.transactions order by _line_number")
    assert got == [
        ("T1", "1,234.50", "home, garden", 2),
        ("T2", "3.00", 'say "hi"', 3),
        ("T3", "3.00", "two\r\nlines", 4),
        ("T4", "3.00", "plain", 6),
    ]


def test_unterminated_quote_rejects_one_line_and_keeps_the_rest(landing, run_ingest, db):
    write_day(landing, "transactions", DAY, tx_file(['T1,C001,1.00,2024-03-05,"broken,M01', *tx_lines(3, start=2)]))
    run = run_ingest("load", "--ds", DAY, "--source", str(landing))
    assert run.code == 0, run.stderr
    assert (run.result["rows_loaded"], run.result["rows_rejected"]) == (3, 1)
    assert rows(db, "select _line_number, reason from raw.transactions_rejected") == [(2, "unterminated quoted field")]


def test_a_quote_inside_an_unquoted_field_that_spans_lines_is_one_rejected_record(landing, run_ingest, db):
    """The line's quotes do not balance, so the next line joins its record; but a quote inside an
    unquoted field is text to the csv module, whose record ends at the line break. Both lines are
    rejected as one record (found by the reliability property test: the second line was lost)."""
    write_day(landing, "transactions", DAY, tx_file(['T1,C0"01,1.00,2024-03-05,grocery,M01', 'x"', *tx_lines(2, start=2)]))
    run = run_ingest("load", "--ds", DAY, "--source", str(landing))
    assert run.code == 0, run.stderr
    assert (run.result["rows_read"], run.result["rows_loaded"], run.result["rows_rejected"]) == (3, 2, 1)
    assert rows(db, "select _line_number, reason, raw_line from raw.transactions_rejected") == [
        (2, "quote inside an unquoted field", b'T1,C0"01,1.00,2024-03-05,grocery,M01\nx"')
    ]
    assert rows(db, "select _line_number from raw.transactions order by 1") == [(4,), (5,)]


def test_header_may_be_reordered_and_cased(landing, run_ingest, db):
    write_day(
        landing,
        "transactions",
        DAY,
        "Customer_ID, TRANSACTION_ID,amount,transaction_date,category,merchant_id\nC001,T1,2.00,2024-03-05,home,M01\n",
    )
    run = run_ingest("load", "--ds", DAY, "--source", str(landing))
    assert run.code == 0, run.stderr
    assert rows(db, "select transaction_id, customer_id from raw.transactions") == [("T1", "C001")]


@pytest.mark.parametrize(
    ("setup", "code", "message"),
    [
        (lambda root: None, ExitCode.SOURCE_MISSING, "no transactions file for 2024-03-05"),
        (lambda root: write_day(root, "transactions", DAY, b""), ExitCode.EMPTY_FILE, "file is empty"),
        (
            lambda root: write_day(root, "transactions", DAY, "id,customer,amount\n1,2,3\n"),
            ExitCode.HEADER_MISMATCH,
            "header does not match",
        ),
        (lambda root: (root / "transactions" / f"{DAY}.csv").mkdir(parents=True), ExitCode.FILE_UNREADABLE, "cannot be read"),
        (
            lambda root: write_day(root, "transactions", DAY, b"not parquet", ".parquet"),
            ExitCode.FILE_UNREADABLE,
            "not a readable Parquet file",
        ),
    ],
    ids=["missing", "empty", "wrong-header", "unreadable", "corrupt-parquet"],
)
def test_bad_input_is_one_line_a_distinct_code_and_writes_nothing(landing, run_ingest, db, setup, code, message):
    write_day(landing, "transactions", "2024-03-04", tx_file(tx_lines(2, "2024-03-04")))
    assert run_ingest("load", "--ds", "2024-03-04", "--source", str(landing)).code == 0
    before = rows(db, "select count(*) from raw.transactions")
    setup(landing)
    # a valid customers file for the same day must not be half-loaded when transactions fail
    write_day(landing, "customers", DAY, f"{CUSTOMER_HEADER}\nC001,40,north,basic,2023-01-01\n")
    run = run_ingest("load", "--ds", DAY, "--source", str(landing))
    assert run.code == code
    assert message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert rows(db, "select count(*) from raw.transactions") == before
    assert rows(db, "select count(*) from raw.customers") == [(0,)]


def test_missing_source_folder_and_bad_arguments(tmp_path, run_ingest):
    assert run_ingest("load", "--ds", DAY, "--source", str(tmp_path / "nowhere")).code == ExitCode.SOURCE_MISSING
    assert run_ingest("load", "--ds", "05/03/2024", "--source", str(tmp_path)).code == ExitCode.BAD_ARGUMENT
    assert run_ingest("load", "--source", str(tmp_path)).code == ExitCode.BAD_ARGUMENT
    assert run_ingest("load", "--history", "--table", "orders", "--source", str(tmp_path)).code == ExitCode.UNKNOWN_TABLE


def test_header_only_file_is_a_quiet_day_not_an_error(landing, run_ingest, db):
    write_day(landing, "transactions", DAY, TX_HEADER + "\n")
    run = run_ingest("load", "--ds", DAY, "--source", str(landing))
    assert run.code == 0, run.stderr
    assert run.result["rows_read"] == 0


def test_customers_table_is_optional(landing, run_ingest, db):
    write_day(landing, "transactions", DAY, tx_file(tx_lines(2)))
    run = run_ingest("load", "--ds", DAY, "--source", str(landing))
    assert run.code == 0
    assert set(run.result["tables"]) == {"transactions"}
    write_day(landing, "customers", DAY, f"{CUSTOMER_HEADER}\nC001,40,north,basic,2023-01-01\nC002,,south,plus,2024-03-05\n")
    run = run_ingest("load", "--ds", DAY, "--source", str(landing))
    assert run.result["tables"]["customers"]["rows_loaded"] == 2
    assert rows(db, "select customer_id, age from raw.customers order by 1") == [("C001", "40"), ("C002", None)]


def test_parquet_daily_and_history(landing, run_ingest, db):
    table = pa.table(
        {
            "transaction_id": ["T1", "T2", "T3"],
            "customer_id": ["C1", None, "C3"],
            "amount": pa.array([1.5, -2.0, 0.0]),
            "transaction_date": pa.array(["2024-03-05", "2024-03-06", "garbage"]),
            "category": ["home", "toys", "home"],
            "merchant_id": ["M1", "M2", "M3"],
        }
    )
    path = landing / "transactions" / f"{DAY}.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(table, path)
    run = run_ingest("load", "--ds", DAY, "--source", str(landing))
    assert run.code == 0, run.stderr
    assert rows(db, "select transaction_id, customer_id, amount, _line_number from raw.transactions order by 1") == [
        ("T1", "C1", "1.5", 1),
        ("T2", None, "-2", 2),
        ("T3", "C3", "0", 3),
    ]
    run = run_ingest("load", "--history", "--source", str(landing))
    assert run.code == 0, run.stderr
    assert (run.result["rows_loaded"], run.result["rows_rejected"]) == (2, 1)
    assert rows(db, "select _partition_date::text, count(*) from raw.transactions group by 1 order by 1") == [
        ("2024-03-05", 1),
        ("2024-03-06", 1),
    ]


def test_history_load_partitions_by_row_date_and_is_idempotent(landing, run_ingest, db):
    write_day(
        landing, "transactions", "a", tx_file([*tx_lines(3, "2024-03-05"), *tx_lines(2, "2024-03-07", start=50), "T99,C1,1.0,nope,home,M1"])
    )
    write_day(landing, "transactions", "b", tx_file(tx_lines(4, "2024-03-07", start=60)))
    write_day(landing, "customers", "all", f"{CUSTOMER_HEADER}\nC001,40,north,basic,2023-01-01\n")
    first = run_ingest("load", "--history", "--source", str(landing))
    assert first.code == 0, first.stderr
    assert first.result["rows_read"] == 11 and first.result["rows_rejected"] == 1
    state = rows(db, "select _partition_date::text, count(*) from raw.transactions group by 1 order by 1")
    assert state == [("2024-03-05", 3), ("2024-03-07", 6)]
    again = run_ingest("load", "--history", "--source", str(landing))
    assert again.code == 0
    assert rows(db, "select _partition_date::text, count(*) from raw.transactions group by 1 order by 1") == state
    assert rows(db, "select count(*) from raw.transactions_rejected") == [(1,)]
    # a later daily load of one of those dates replaces just that date
    write_day(landing, "transactions", "2024-03-07", tx_file(tx_lines(1, "2024-03-07", start=90)))
    assert run_ingest("load", "--ds", "2024-03-07", "--source", str(landing)).code == 0
    assert rows(db, "select _partition_date::text, count(*) from raw.transactions group by 1 order by 1") == [
        ("2024-03-05", 3),
        ("2024-03-07", 1),
    ]


def test_concurrent_loads_of_different_dates_and_of_the_same_date(landing, run_ingest, db):
    days = [f"2024-04-{d:02d}" for d in range(1, 7)]
    for i, day in enumerate(days):
        write_day(landing, "transactions", day, tx_file(tx_lines(2000, day, start=i * 10_000)))
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        codes = list(pool.map(lambda d: run_ingest("load", "--ds", d, "--source", str(landing)).code, days))
    assert codes == [0] * 6
    assert rows(db, "select count(*), count(distinct _partition_date) from raw.transactions") == [(12_000, 6)]
    # the same date four times at once: serialised by the lock, never duplicated or mixed
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        codes = list(pool.map(lambda _: run_ingest("load", "--ds", days[0], "--source", str(landing)).code, range(4)))
    assert codes == [0] * 4
    assert rows(
        db,
        "select count(*), count(distinct transaction_id), count(distinct _batch_id) from raw.transactions where _partition_date = %s",
        days[0],
    ) == [(2000, 2000, 1)]


def test_generated_history_with_defects_keeps_the_line_count_invariant(tmp_path, run_ingest, db):
    out = tmp_path / "gen"
    gen = run_ingest(
        "generate", "--out", str(out), "--customers", "300", "--start", "2024-01-01", "--end", "2024-03-31", "--bad-row-rate", "0.05"
    )
    assert gen.code == 0, gen.stderr
    data_lines = sum(len(p.read_bytes().splitlines()) - 1 for p in out.rglob("*.csv"))
    run = run_ingest("load", "--history", "--source", str(out))
    assert run.code == 0, run.stderr
    assert run.result["rows_read"] == data_lines == run.result["rows_loaded"] + run.result["rows_rejected"]
    landed = rows(db, "select (select count(*) from raw.transactions) + (select count(*) from raw.customers)")[0][0]
    rejected = rows(db, "select (select count(*) from raw.transactions_rejected) + (select count(*) from raw.customers_rejected)")[0][0]
    assert (landed, rejected) == (run.result["rows_loaded"], run.result["rows_rejected"])
    defects = gen.result["defects"]
    reasons = dict(rows(db, "select reason, count(*) from raw.transactions_rejected group by 1"))
    assert reasons["not valid UTF-8"] == defects["non_utf8"]
    assert reasons["expected 6 fields, found 5"] + reasons["expected 6 fields, found 7"] == defects["wrong_field_count"]
    assert reasons["unparseable transaction_date (a history load partitions rows by it)"] == defects["unparseable_date"]
    duplicated = rows(db, "select count(*) - count(distinct transaction_id) from raw.transactions")[0][0]
    assert duplicated == defects["duplicate_transaction"]


def test_result_path_follows_the_stage_contract(landing, run_ingest, tmp_path):
    write_day(landing, "transactions", DAY, tx_file(tx_lines(1)))
    custom = tmp_path / "xcom" / "return.json"
    run = run_ingest("load", "--ds", DAY, "--source", str(landing), env={"PIPELINE_RESULT_PATH": str(custom)})
    assert run.code == 0 and custom.exists()
    assert '"rows_loaded": 1' in custom.read_text()
    assert os.environ.get("PGPASSWORD", "\x00") not in custom.read_text() + run.stdout + run.stderr


def test_environment_variable_names_the_landing_folder(landing, run_ingest, db):
    write_day(landing, "transactions", DAY, tx_file(tx_lines(2)))
    run = run_ingest("load", "--ds", DAY, env={"PIPELINE_LANDING_DIR": str(landing)})
    assert run.code == 0, run.stderr
    assert Path(str(landing)).is_dir()


def partitions(db) -> list[str]:  # type: ignore[no-untyped-def]
    query = "select c.relname::text"
    query += " from pg_inherits i join pg_class c on c.oid = i.inhrelid where i.inhparent = 'raw.transactions'::regclass"
    return sorted(r[0] for r in rows(db, query))


def test_history_load_gives_each_month_one_partition_and_daily_loads_keep_their_days(landing, run_ingest, db):
    """A backfill's DDL is a table per month, not per day; a day that a daily load gave a table
    keeps it; a row whose month the file names did not announce still lands (held back, then sent)."""
    write_day(landing, "transactions", DAY, tx_file(tx_lines(2, DAY)))
    assert run_ingest("load", "--ds", DAY, "--source", str(landing)).code == 0
    history = landing.parent / "history"
    write_day(history, "transactions", "2024-03-04", tx_file(tx_lines(3, "2024-03-04")))
    write_day(history, "transactions", "2024-03-05", tx_file(tx_lines(4, "2024-03-05", start=10)))
    write_day(history, "transactions", "2024-04-01", tx_file([*tx_lines(5, "2024-04-01", start=20), *tx_lines(1, "2024-07-15", start=30)]))
    run = run_ingest("load", "--history", "--source", str(history))
    assert run.code == 0, run.stderr
    assert partitions(db) == ["transactions_d20240305", "transactions_m202403", "transactions_m202404", "transactions_m202407"]
    assert rows(db, "select _partition_date::text, tableoid::regclass::text, count(*) from raw.transactions group by 1, 2 order by 1") == [
        ("2024-03-04", "raw.transactions_m202403", 3),
        ("2024-03-05", "raw.transactions_d20240305", 4),  # the daily load's 2 rows replaced
        ("2024-04-01", "raw.transactions_m202404", 5),
        ("2024-07-15", "raw.transactions_m202407", 1),
    ]
    # each file's batch names the days its rows went to (the daily dbt build reads only those)
    batches = "select source_file like '%%2024-04-01.csv', partition_dates::text[] from raw.load_batches"
    batches += " where mode = 'history' order by batch_id"
    assert rows(db, batches) == [
        (False, ["2024-03-04"]),
        (False, ["2024-03-05"]),
        (True, ["2024-04-01", "2024-07-15"]),
    ]
    # a daily load of a day a month table holds replaces that day there, and creates no table
    write_day(landing, "transactions", "2024-03-04", tx_file(tx_lines(1, "2024-03-04", start=90)))
    assert run_ingest("load", "--ds", "2024-03-04", "--source", str(landing)).code == 0
    assert len(partitions(db)) == 4
    assert rows(db, "select transaction_id from raw.transactions where _partition_date = '2024-03-04'") == [("T000090",)]
    assert rows(db, "select count(*) from raw.transactions where _partition_date <> '2024-03-04'") == [(10,)]
    # and the backfill again: same state (idempotent), still four tables
    before = rows(db, "select _partition_date::text, transaction_id from raw.transactions order by 1, 2")
    assert run_ingest("load", "--history", "--source", str(history)).code == 0
    assert len(partitions(db)) == 4
    after = rows(db, "select _partition_date::text, transaction_id from raw.transactions order by 1, 2")
    assert [r for r in after if r[0] != "2024-03-04"] == [r for r in before if r[0] != "2024-03-04"]
    assert [r[1] for r in after if r[0] == "2024-03-04"] == ["T000001", "T000002", "T000003"]


def month_table_definitions(db) -> list[tuple[str, str, int]]:  # type: ignore[no-untyped-def]
    """(name, `_loaded_at` default, CHECK constraints) of each transactions month table: one a load
    staged must end up defined like one it created."""
    query = "select c.relname::text, pg_get_expr(d.adbin, d.adrelid),"
    query += " (select count(*) from pg_constraint as k where k.conrelid = c.oid and k.contype = 'c')"
    query += " from pg_class as c join pg_attrdef as d on d.adrelid = c.oid where c.relname like 'transactions_m%%' order by 1"
    return rows(db, query)


def frozen_and_all_pages(warehouse: dict[str, str], relation: str) -> tuple[int, int]:
    """(pages marked all-frozen in the visibility map, pages) of a table: pg_visibility, as the
    embedded warehouse's superuser."""
    admin = embedded_superuser(warehouse, dbname=warehouse["PGDATABASE"])
    if admin is None:
        pytest.skip("needs the embedded warehouse's superuser (pg_visibility)")
    with admin:
        admin.execute("create extension if not exists pg_visibility")
        query = "select (pg_visibility_map_summary(%s::regclass)).all_frozen,"
        query += " pg_relation_size(%s::regclass) / current_setting('block_size')::int"
        found = admin.execute(query, (relation, relation)).fetchone()
    assert found is not None
    return int(found[0]), int(found[1])


def test_tables_a_load_creates_get_their_rows_frozen(landing, run_ingest, db, warehouse, history_load):
    """A load's new tables (a history load's month tables, a daily load's day table) are truncated
    in its transaction, so COPY FREEZE applies: no hint-bit rewrite of every page at the first read,
    no freezing by vacuum later. Rows sent through the parent (here: held back for a month the file
    names did not announce) are loaded as usual."""
    history = landing.parent / "history"
    write_day(history, "transactions", "2024-03-04", tx_file(tx_lines(400, "2024-03-04")))
    april = [*tx_lines(300, "2024-04-01", start=1000), *tx_lines(1, "2024-07-15", start=5000)]
    write_day(history, "transactions", "2024-04-01", tx_file(april))
    history_load(history, streamed=True)
    write_day(landing, "transactions", "2024-05-02", tx_file(tx_lines(200, "2024-05-02", start=7000)))
    assert run_ingest("load", "--ds", "2024-05-02", "--source", str(landing)).code == 0
    assert rows(db, "select tableoid::regclass::text, count(*) from raw.transactions group by 1 order by 1") == [
        ("raw.transactions_d20240502", 200),
        ("raw.transactions_m202403", 400),
        ("raw.transactions_m202404", 300),
        ("raw.transactions_m202407", 1),
    ]
    for frozen in ("raw.transactions_m202403", "raw.transactions_m202404", "raw.transactions_d20240502"):
        all_frozen, pages = frozen_and_all_pages(warehouse, frozen)
        assert pages > 0 and all_frozen == pages, frozen
    assert frozen_and_all_pages(warehouse, "raw.transactions_m202407")[0] == 0


def test_a_daily_load_waits_for_a_history_load_of_its_table(landing, run_ingest, db, warehouse):
    """A history load holds its table (its new month tables must hold its rows only); a daily load
    of that table waits for it instead of writing into them."""

    write_day(landing, "transactions", DAY, tx_file(tx_lines(2, DAY)))
    with psycopg.connect(conninfo(warehouse)) as history, concurrent.futures.ThreadPoolExecutor(1) as pool:
        lock_for_transaction(history, "raw", "transactions")  # what a history load holds until it commits
        daily = pool.submit(run_ingest, "load", "--ds", DAY, "--source", str(landing))
        waiting = []
        for _ in range(100):
            waiting = rows(db, "select 1 from pg_stat_activity where application_name like 'ingest%%' and wait_event = 'advisory'")
            if waiting or daily.done():
                break
            time.sleep(0.1)
        assert waiting and not daily.done(), "the daily load did not wait for the history load"
        history.rollback()
        assert daily.result(timeout=60).code == 0
    assert rows(db, "select count(*) from raw.transactions") == [(2,)]


def test_history_load_fills_every_other_new_month_on_a_second_connection(landing, run_ingest, db, warehouse, monkeypatch, history_load):
    """Two connections share a backfill's COPY: the months the load's transaction does not create
    are staged on the second one and attached before commit. They end up exactly like the others:
    named and defined the same, frozen, no stage table left, and every row of the load carries its
    one load time, so dbt orders re-sent copies of a transaction the same way."""
    from ingest import stages

    attached: list[str] = []

    def attach_and_note(conn, table, staged, loaded_days):  # type: ignore[no-untyped-def]
        attached.extend(f"{table.name}:{stage.month:%Y-%m}" for stage in staged)
        stages_attach(conn, table, staged, loaded_days)

    stages_attach = stages.attach
    monkeypatch.setattr(stages, "attach", attach_and_note)
    history = landing.parent / "history"
    for i, day in enumerate(["2024-01-10", "2024-02-10", "2024-03-10", "2024-04-10"]):
        write_day(history, "transactions", day, tx_file(tx_lines(300, day, start=1000 * i)))
    write_day(
        history, "transactions", "2024-02-11", tx_file([*tx_lines(2, "2024-02-11", start=9000), *tx_lines(1, "2024-07-01", start=9100)])
    )
    history_load(history, streamed=True)
    assert attached == ["transactions:2024-02", "transactions:2024-04"]
    assert partitions(db) == [f"transactions_m2024{m:02d}" for m in (1, 2, 3, 4, 7)]
    assert stage_tables(db) == []
    assert rows(db, "select count(*), count(distinct _loaded_at) from raw.transactions") == [(1203, 1)]
    assert rows(
        db,
        "select count(*) from raw.transactions as t join raw.load_batches as b on b.batch_id = t._batch_id and b.loaded_at = t._loaded_at",
    ) == [(1203,)]
    # the stage tables' day lists (CHECK) and load-time default are gone: defined like the others
    assert month_table_definitions(db) == [(name, "now()", 0) for name in partitions(db)]
    for staged in ("raw.transactions_m202402", "raw.transactions_m202404"):
        all_frozen, pages = frozen_and_all_pages(warehouse, staged)
        assert pages > 0 and all_frozen == pages, staged
    # a daily load of a day in a staged month replaces it there, with a load time of its own
    write_day(landing, "transactions", "2024-02-10", tx_file(tx_lines(5, "2024-02-10", start=7000)))
    assert run_ingest("load", "--ds", "2024-02-10", "--source", str(landing)).code == 0
    by_day = "select _partition_date::text, count(*), count(distinct _loaded_at) from raw.transactions group by 1 order by 1"
    assert rows(db, by_day)[:3] == [("2024-01-10", 300, 1), ("2024-02-10", 5, 1), ("2024-02-11", 2, 1)]
    assert rows(db, "select count(distinct _loaded_at) from raw.transactions") == [(2,)]


def test_a_history_load_drops_the_stage_tables_a_dead_load_left(landing, run_ingest, db):
    """A load killed after its second connection committed leaves stage tables no partitioned
    table has (nobody reads them); the next history load of the table drops them."""
    history = landing.parent / "history"
    for day in ("2024-01-10", "2024-02-10"):
        write_day(history, "transactions", day, tx_file(tx_lines(3, day)))
    assert run_ingest("load", "--history", "--source", str(history)).code == 0
    db.execute("create table raw._stage_transactions_1_m202402 (like raw.transactions)")
    db.execute("insert into raw._stage_transactions_1_m202402 values ('T1', 'C1', '1', '2024-02-10', 'x', 'M', 2, '2024-02-10', 1, now())")
    db.execute("create table raw._stage_customers_1_m202402 (like raw.customers)")
    assert rows(db, "select count(*) from raw.transactions") == [(6,)]
    assert run_ingest("load", "--history", "--source", str(history)).code == 0
    assert stage_tables(db) == ["_stage_customers_1_m202402"]  # another table's: its next history load drops it
    assert rows(db, "select count(*) from raw.transactions") == [(6,)]


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "read-ahead"])
def test_a_backfill_run_again_replaces_the_month_tables_whose_every_day_it_names(
    landing, run_ingest, db, warehouse, history_load, streamed
):
    """A history load that names every day of a month table builds the month anew (staged on
    either connection, or on its own when the table is read ahead) and drops the old table: no old
    row deleted, none routed one by one. A day whose file brings no rows keeps its old rows; a month
    named in part, and a day a daily load gave a table, are replaced day by day as before."""

    write_day(landing, "transactions", DAY, tx_file(tx_lines(2, DAY)))
    assert run_ingest("load", "--ds", DAY, "--source", str(landing)).code == 0
    history = landing.parent / "history"
    february = [f"2024-02-{d:02d}" for d in range(1, 30)]
    march = [f"2024-03-{d:02d}" for d in range(1, 32)]
    for i, day in enumerate([*february, *march, "2024-04-10"]):
        write_day(history, "transactions", day, tx_file(tx_lines(2, day, start=10 * i)))
    history_load(history, streamed=streamed)
    assert partitions(db) == ["transactions_d20240305", "transactions_m202402", "transactions_m202403", "transactions_m202404"]
    oid = "select c.relname::text, c.oid::int from pg_class as c where c.relname like 'transactions_m%%' order by 1"
    before_oids = dict(rows(db, oid))
    old_rows = "select transaction_id, _batch_id, _loaded_at from raw.transactions where _partition_date = '2024-03-07' order by 1"
    kept = rows(db, old_rows)
    write_day(history, "transactions", "2024-03-07", tx_file([]))  # no rows: the day keeps its old ones
    for i, day in enumerate(["2024-02-11", "2024-03-08", DAY, "2024-04-10"]):
        write_day(history, "transactions", day, tx_file(tx_lines(3, day, start=900 + 10 * i)))
    history_load(history, streamed=streamed)
    after_oids = dict(rows(db, oid))
    assert after_oids["transactions_m202404"] == before_oids["transactions_m202404"]  # April is named in part
    assert after_oids["transactions_m202402"] != before_oids["transactions_m202402"]
    assert after_oids["transactions_m202403"] != before_oids["transactions_m202403"]
    assert partitions(db) == ["transactions_d20240305", "transactions_m202402", "transactions_m202403", "transactions_m202404"]
    assert stage_tables(db) == []
    by_day = "select _partition_date::text, tableoid::regclass::text, count(*) from raw.transactions"
    by_day += " where _partition_date in ('2024-02-10', '2024-02-11', '2024-03-05', '2024-03-07', '2024-03-08', '2024-04-10')"
    by_day += " group by 1, 2 order by 1"
    assert rows(db, by_day) == [
        ("2024-02-10", "raw.transactions_m202402", 2),
        ("2024-02-11", "raw.transactions_m202402", 3),
        ("2024-03-05", "raw.transactions_d20240305", 3),
        ("2024-03-07", "raw.transactions_m202403", 2),
        ("2024-03-08", "raw.transactions_m202403", 3),
        ("2024-04-10", "raw.transactions_m202404", 3),
    ]
    assert rows(db, "select count(*) from raw.transactions") == [(2 * 56 + 3 * 4 + 2,)]  # 61 files: 4 of 3 rows, 1 empty
    assert kept == rows(db, old_rows)
    assert rows(db, "select count(distinct _loaded_at) from raw.transactions where _partition_date <> '2024-03-07'") == [(1,)]
    # defined like a month table the load had created: the parent's columns, no day list, now()
    assert month_table_definitions(db) == [(f"transactions_m2024{m:02d}", "now()", 0) for m in (2, 3, 4)]
    # February (filled in the load's own transaction, no row kept): every page frozen
    all_frozen, pages = frozen_and_all_pages(warehouse, "raw.transactions_m202402")
    assert pages > 0 and all_frozen == pages


@pytest.mark.parametrize("streamed", [False, True], ids=["read-ahead", "streamed"])
def test_a_small_table_read_ahead_keeps_readers_of_other_days_going_while_it_loads(
    landing, run_ingest, db, warehouse, monkeypatch, history_load, streamed
):
    """A table small enough to read whole first announces every day its rows hold, so a month its
    files' names do not (customers who signed up long before their file's day) gets its table
    before the load's transaction starts, like every other month: while the load runs, a reader of
    a day it does not touch goes on. A streamed table's such month is created in the transaction,
    after the rows held back, which locks the whole parent table until commit."""
    from ingest import load as loading

    may = "2024-05-01"
    write_day(landing, "transactions", may, tx_file(tx_lines(1, may)))
    write_day(landing, "customers", may, "\n".join([CUSTOMER_HEADER, f"C009,50,east,basic,{may}"]) + "\n")
    assert run_ingest("load", "--ds", may, "--source", str(landing)).code == 0
    history = landing.parent / "history"
    write_day(history, "transactions", "2024-03-04", tx_file(tx_lines(3, "2024-03-04")))
    early = "\n".join([CUSTOMER_HEADER, "C001,40,north,basic,2021-06-30", "C002,33,south,premium,2024-03-04"]) + "\n"
    write_day(history, "customers", "2024-03-04", early)
    readers: list[str] = []
    record_batches = loading._record_batches

    def read_may_meanwhile(conn, loaded):  # type: ignore[no-untyped-def]
        if loaded[0].path.parent.name == "customers":  # in the load's transaction, its rows sent
            with psycopg.connect(conninfo(warehouse)) as reader:
                reader.execute("set lock_timeout = '300ms'")
                try:
                    found = reader.execute("select customer_id from raw.customers where _partition_date = %s", (may,)).fetchall()
                    readers.append(f"read {found}")
                except psycopg.errors.LockNotAvailable:
                    readers.append("locked out")
        record_batches(conn, loaded)

    monkeypatch.setattr(loading, "_record_batches", read_may_meanwhile)
    history_load(history, streamed=streamed)
    assert readers == (["locked out"] if streamed else ["read [('C009',)]"])
    assert rows(db, "select customer_id, tableoid::regclass::text from raw.customers order by 1") == [
        ("C001", "raw.customers_m202106"),
        ("C002", "raw.customers_m202403"),
        ("C009", "raw.customers_d20240501"),
    ]


def test_a_lane_joins_small_payloads_and_keeps_every_row_in_order(db, warehouse, monkeypatch):
    """Small payloads (a day of customers is a few KB) are joined before they reach the lane's
    thread; big ones go as they are, and a change of target sends what was held first. Every row
    lands, each table's rows in the order sent, in fewer hand-overs than payloads; a lane closed
    because the load failed sends nothing it still held."""
    from ingest import lanes

    db.execute("create schema raw")
    for name in ("a", "b"):
        db.execute(f"create table raw.{name} (n bigint not null, note text)")
    monkeypatch.setattr(lanes, "JOIN_BELOW", 64)
    sent: list[tuple[str, int]] = []
    queued: list[str] = []

    def payload(target: str, n: int, size: int) -> bytes:
        sent.append((target, n))
        return b"%d,%s\n" % (n, b"x" * size)

    with psycopg.connect(conninfo(warehouse)) as conn:
        lane = lanes.CopyLane(conn, "test", frozen=set())
        put = lane._queue.put
        monkeypatch.setattr(lane._queue, "put", lambda item: (queued.append(item[0] if item else "end"), put(item)))
        columns = ("n", "note")
        for n in range(40):  # small, then a big one, then small ones for the other table
            target = "a" if n < 25 else "b"
            lane.send(target, columns, payload(target, n, 200 if n == 10 else 5))
        lane.close()
        conn.commit()
    assert rows(db, "select n from raw.a order by ctid") == [(n,) for target, n in sent if target == "a"]
    assert rows(db, "select n from raw.b order by ctid") == [(n,) for target, n in sent if target == "b"]
    assert rows(db, "select count(*) from raw.a") == [(25,)]
    assert 4 <= len(queued) < 40 and queued[-1] == "end"
    with psycopg.connect(conninfo(warehouse)) as conn:
        lane = lanes.CopyLane(conn, "test", frozen=set())
        lane.send("a", ("n", "note"), b"99,held\n")
        lane.close(abort=True)
        conn.rollback()
    assert rows(db, "select count(*) from raw.a where n = 99") == [(0,)]

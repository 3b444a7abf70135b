"""Reliability of ingest (issue 10): random bad input loses no line, SIGKILL mid-COPY leaves the old
day or the new one, and a broken landing folder gives one clear error and writes nothing.

Property-based tests (hypothesis) load straight through `ingest.load.load` in-process, so hundreds
of inputs stay cheap; the only exception allowed out of it is `StageError` (the CLI turns that into
one stderr line and an exit code). Every example is checked against an oracle that knows nothing
about the parser: the records that landed in raw or rejected, each spanning `1 + its line breaks`
physical lines, must tile the file's lines 2..N exactly: no line lost, none counted twice.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.contract import TABLES
from ingest.load import ensure_schema, load
from mlp_common.exit_codes import ExitCode, StageError
from mlp_common.warehouse import connect
from tests.db_helpers import wait_for_sessions_to_end
from tests.faults import failed_cleanly_and_retryably, restart_warehouse_under
from tests.ingest.helpers import TX_HEADER, stage_tables, write_day

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

DAY = "2024-03-05"
DS = date.fromisoformat(DAY)
COLUMNS = list(TABLES["transactions"].columns)
PROPERTY_SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# --- the oracle -------------------------------------------------------------------------------


def physical_lines(content: bytes) -> int:
    """Lines after the header line, as the data contract counts them (a last line without a line end counts)."""
    first = content.find(b"\n")
    body = b"" if first < 0 else content[first + 1 :]
    return body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)


def accounted_lines(conn: psycopg.Connection, day: date) -> list[tuple[int, int]]:
    """(first line, lines spanned) of every record of `day` in raw.transactions and its rejected table."""
    landed = conn.execute(f"select _line_number, {', '.join(COLUMNS)} from raw.transactions where _partition_date = %s", (day,))
    spans = [(int(r[0]), 1 + sum((v or "").count("\n") for v in r[1:])) for r in landed]
    rejected = conn.execute("select _line_number, raw_line from raw.transactions_rejected where _partition_date = %s", (day,))
    spans += [(int(r[0]), 1 + bytes(r[1]).count(b"\n")) for r in rejected]
    return sorted(spans)


def lines_lost(conn: psycopg.Connection, day: date, content: bytes) -> int:
    """How many of the file's lines no record accounts for (or accounts for twice): 0 when they tile 2..N."""
    expected = physical_lines(content)
    covered: list[int] = []
    for first, span in accounted_lines(conn, day):
        covered.extend(range(first, first + span))
    if covered == list(range(2, 2 + expected)):
        return 0
    return max(1, abs(expected - len(set(covered))) + (len(covered) - len(set(covered))))


def day_state(conn: psycopg.Connection, day: date = DS) -> tuple[int, int, int]:
    """(rows, distinct batches, rejected lines) of a day: enough to tell an old load from a new one."""
    ensure_schema(conn)
    row = conn.execute(
        "select (select count(*) from raw.transactions where _partition_date = %(d)s),"
        " (select count(distinct _batch_id) from raw.transactions where _partition_date = %(d)s),"
        " (select count(*) from raw.transactions_rejected where _partition_date = %(d)s)",
        {"d": day},
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def load_in_process(landing: Path) -> dict[str, int] | StageError:
    """One daily load of `landing` for DAY through the loader itself; a StageError is returned, anything else raises."""
    try:
        with connect("ingest-test") as conn:
            stats = load(conn, {"transactions": [landing / "transactions" / f"{DAY}.csv"]}, ds=DS)["transactions"]
    except StageError as exc:
        return exc
    return {"read": stats.rows_read, "loaded": stats.rows_loaded, "rejected": stats.rows_rejected}


def check_lossless(db: psycopg.Connection, landing: Path, content: bytes) -> dict[str, int] | StageError:
    write_day(landing, "transactions", DAY, content)
    outcome = load_in_process(landing)
    if isinstance(outcome, dict):
        assert outcome["read"] == outcome["loaded"] + outcome["rejected"]
        assert (outcome["loaded"], outcome["rejected"]) == day_state(db)[::2]
        assert lines_lost(db, DS, content) == 0, (content[:300], accounted_lines(db, DS)[:20])
    return outcome


# --- strategies -------------------------------------------------------------------------------

# field text with everything CSV makes hard: separators, quotes, line breaks, spaces, non-ASCII (no NUL:
# the contract rejects a NUL byte, so a "valid" field never holds one)
field_text = st.text(
    alphabet=st.one_of(st.sampled_from(list(',"\n\r \t;|\\.')), st.characters(codec="utf-8", exclude_characters="\x00")), max_size=12
)
good_rows = st.lists(st.lists(field_text, min_size=6, max_size=6), min_size=0, max_size=25)


def csv_field(value: str, quote_all: bool) -> str:
    """RFC 4180: a field holding a comma, quote, CR or LF is quoted (Python's csv writer leaves a lone CR bare)."""
    if quote_all or any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


@st.composite
def dialect_quirks(draw: st.DrawFn) -> tuple[bytes, list[list[str]]]:
    """A well-formed file in some legal dialect: header order, case and spaces, quoting style, CRLF, BOM."""
    rows = draw(good_rows)
    order = draw(st.permutations(range(6)))
    header = [draw(st.sampled_from([c, c.upper(), f" {c} ", c.title()])) for c in (COLUMNS[i] for i in order)]
    quote_all = draw(st.booleans())
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    lines = [",".join(csv_field(v, quote_all) for v in fields) for fields in [header, *([row[i] for i in order] for row in rows)]]
    body = (newline.join(lines) + newline).encode()
    if draw(st.booleans()):
        body = b"\xef\xbb\xbf" + body
    if rows and draw(st.booleans()):
        body = body.removesuffix(newline.encode())  # no line end after the last record
    return body, rows


garbage_line = st.one_of(
    st.binary(max_size=80),
    st.lists(st.text(max_size=6), min_size=0, max_size=9).map(lambda f: ",".join(f).encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b"\r", b'"', b'a,"b', b"\x00,,,,,", b"\xff\xfe,,,,,", b",,,,,\r,", b'"""",,,,,', b"\\.", b" , , , , , "]),
)


@st.composite
def mixed_files(draw: st.DrawFn) -> bytes:
    """A valid header, then good lines and random garbage lines (random bytes too) in any order."""
    good = [",".join(f"v{i}{j}" for j in range(6)).encode() for i in range(draw(st.integers(0, 15)))]
    bad = draw(st.lists(garbage_line, max_size=15))
    lines = draw(st.permutations(good + bad))
    ending = draw(st.sampled_from([b"\n", b"\r\n"]))
    return TX_HEADER.encode() + b"\n" + ending.join(lines) + draw(st.sampled_from([b"", ending]))


@st.composite
def drifted_headers(draw: st.DrawFn) -> list[str]:
    """The contract's header with a column removed, added, renamed or duplicated (schema drift at the source)."""
    columns = list(COLUMNS)
    change = draw(st.sampled_from(["remove", "add", "rename", "duplicate"]))
    at = draw(st.integers(0, len(columns) - 1))
    if change == "remove":
        columns.pop(at)
    elif change == "add":
        columns.insert(at, draw(st.sampled_from(["channel", "currency", "store_id", "amount_eur"])))
    elif change == "rename":
        columns[at] = columns[at] + draw(st.sampled_from(["_v2", "s", "_id"]))
    else:
        columns.insert(at, columns[at])
    return draw(st.permutations(columns))


# --- property-based bad input ------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(case=dialect_quirks())
def test_reliability_csv_dialect_quirks_land_every_value(landing, db, reliability, case) -> None:
    content, expected_rows = case
    reliability.bad_inputs += 1
    outcome = check_lossless(db, landing, content)
    assert isinstance(outcome, dict), f"a well-formed file was refused: {outcome}"
    assert outcome["rejected"] == 0 and outcome["loaded"] == len(expected_rows)
    landed = db.execute(
        f"select {', '.join(f'coalesce({c}, {chr(39)}{chr(39)})' for c in COLUMNS)} from raw.transactions"
        " where _partition_date = %s order by _line_number",
        (DS,),
    ).fetchall()
    assert [list(r) for r in landed] == expected_rows  # empty fields land as NULL, everything else exactly


@PROPERTY_SETTINGS
@given(content=mixed_files())
def test_reliability_random_garbage_lines_are_rejected_never_lost(landing, db, reliability, content) -> None:
    reliability.bad_inputs += 1
    outcome = check_lossless(db, landing, content)
    assert isinstance(outcome, dict), outcome


@PROPERTY_SETTINGS
@given(content=st.binary(max_size=400))
def test_reliability_random_bytes_are_a_clear_error_or_a_lossless_load(landing, db, reliability, content) -> None:
    reliability.bad_inputs += 1
    before = day_state(db)
    outcome = check_lossless(db, landing, content)
    if isinstance(outcome, StageError):
        assert outcome.code in (ExitCode.EMPTY_FILE, ExitCode.HEADER_MISMATCH)
        assert "\n" not in str(outcome).strip()
        assert day_state(db) == before  # a refused file writes nothing


@settings(PROPERTY_SETTINGS, max_examples=30)
@given(header=drifted_headers(), rows=st.integers(0, 5))
def test_reliability_source_schema_drift_is_refused_and_writes_nothing(landing, db, reliability, header, rows) -> None:
    reliability.bad_inputs += 1
    write_day(landing, "transactions", DAY, TX_HEADER + "\n" + "T1,C1,1.00,2024-03-05,grocery,M1\n")
    assert isinstance(load_in_process(landing), dict)
    before = day_state(db)
    content = ",".join(header) + "\n" + "".join(",".join(["x"] * len(header)) + "\n" for _ in range(rows))
    write_day(landing, "transactions", DAY, content)
    outcome = load_in_process(landing)
    assert isinstance(outcome, StageError) and outcome.code == ExitCode.HEADER_MISMATCH, outcome
    assert "expected transaction_id,customer_id" in str(outcome)
    assert day_state(db) == before


def test_reliability_bad_input_through_the_cli_is_one_line_never_a_traceback(landing, run_ingest, db, reliability) -> None:
    """The same kinds of input through the real CLI: exit 0 or a contract code, one stderr line, no traceback."""
    rng = random.Random(10)
    samples = [
        bytes(rng.randrange(256) for _ in range(300)),
        TX_HEADER.encode() + b"\n" + bytes(rng.randrange(256) for _ in range(2000)),
        b"\xef\xbb\xbf" + TX_HEADER.upper().encode() + b'\r\n"a\r\nb",c,1,2024-03-05,x,y\r\n"unterminated,,,,,\r\n',
        b"transaction_id,customer_id,amount\n1,2,3\n",
        b"\r\x00\n",  # found by hypothesis: the csv module raised on the header (exit 1 and a traceback-worthy message)
        TX_HEADER.encode() + b'\nT1,C1,"' + b"x" * 200_000 + b'",2024-03-05,grocery,M1\nT2,C2,1.00,2024-03-05,grocery,M1\n',
        b"",
        b"\n\n\n",
    ]
    for content in samples:
        reliability.bad_inputs += 1
        write_day(landing, "transactions", DAY, content)
        run = run_ingest("load", "--ds", DAY, "--source", str(landing))
        assert "Traceback" not in run.stderr
        if run.code == 0:
            assert run.result is not None and run.result["rows_read"] == run.result["rows_loaded"] + run.result["rows_rejected"]
            assert lines_lost(db, DS, content) == 0
        else:
            assert run.code in (ExitCode.EMPTY_FILE, ExitCode.HEADER_MISMATCH), run.stderr
            assert len(run.stderr.strip().splitlines()) == 1 and run.stderr.startswith("ingest: error: ")


# --- SIGKILL during the warehouse write --------------------------------------------------------


def big_day(lines: int, seed: int) -> bytes:
    """A day file large enough that its COPY takes a while, with some lines that must be rejected."""
    rng = random.Random(seed)
    out = [TX_HEADER.encode()]
    for i in range(lines):
        if i % 5000 == 0:
            out.append(b"T%d,C%d,1.00,2024-03-05,bad" % (i, i))  # wrong field count: rejected
        else:
            out.append(b"T%d,C%d,%d.%02d,2024-03-05,grocery,M%d" % (i, rng.randrange(9999), rng.randrange(500), i % 100, i % 97))
    return b"\n".join(out) + b"\n"


def copy_progress(db: psycopg.Connection) -> int | None:
    """Tuples processed by the ingest COPY in flight (None when no COPY of ours is running)."""
    row = db.execute(
        "select p.tuples_processed from pg_stat_progress_copy as p inner join pg_stat_activity as a on a.pid = p.pid"
        " where a.application_name = 'ingest' and a.datname = current_database()"
    ).fetchone()
    return None if row is None else int(row[0])


def test_reliability_sigkill_during_copy_leaves_the_old_day_or_the_new_one(landing, run_ingest, db, warehouse, tmp_path, reliability):
    """Kill `ingest load` with SIGKILL at random points of its write (mid-COPY by progress, or after a
    random delay): the day is then exactly the old load or exactly the new one, and a retry completes."""
    old_lines, new_lines = 1_000, 300_000
    write_day(landing, "transactions", DAY, big_day(old_lines, seed=1))
    assert run_ingest("load", "--ds", DAY, "--source", str(landing)).code == 0
    old = day_state(db)
    new_content = big_day(new_lines, seed=2)
    write_day(landing, "transactions", DAY, new_content)
    new = (new_lines - new_lines // 5000, 1, new_lines // 5000)
    rng = random.Random()
    env = {**os.environ, **warehouse, "PIPELINE_RESULT_PATH": str(tmp_path / "killed.json")}
    kill_points = [("rows", rng.randrange(1, new[0] * 3 // 4)) for _ in range(3)] + [("seconds", rng.uniform(0.2, 2.0)) for _ in range(2)]
    for kind, point in kill_points:
        proc = subprocess.Popen([sys.executable, "-m", "ingest.cli", "load", "--ds", DAY, "--source", str(landing)], env=env)
        started = time.monotonic()
        try:
            while proc.poll() is None:
                progress = copy_progress(db) if kind == "rows" else None
                if (progress is not None and progress >= point) or (kind == "seconds" and time.monotonic() - started >= point):
                    os.kill(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.005)
        finally:
            proc.wait(timeout=60)
        killed = proc.returncode == -signal.SIGKILL
        wait_for_sessions_to_end(db, "ingest%")
        state = day_state(db)
        assert state in (old, new), f"killed at {kind}={point}: the day shows {state}, neither old {old} nor new {new}"
        lost = lines_lost(db, DS, new_content) if state == new else 0
        reliability.lines_lost += lost
        if killed:
            reliability.fault(survived=state in (old, new) and lost == 0)
        # the retry (what Airflow does next) completes and leaves exactly the new day
        retry = run_ingest("load", "--ds", DAY, "--source", str(landing))
        assert retry.code == 0, retry.stderr
        assert day_state(db) == new
        reliability.lines_lost += lines_lost(db, DS, new_content)
        # back to the old day for the next kill
        write_day(landing, "transactions", DAY, big_day(old_lines, seed=1))
        assert run_ingest("load", "--ds", DAY, "--source", str(landing)).code == 0
        write_day(landing, "transactions", DAY, new_content)
    assert reliability.faults_injected >= 3, "the loader finished before most kills: make the file bigger"


def history_state(conn: psycopg.Connection) -> tuple[int, int, int, int]:
    """(rows, distinct batches, rejected lines, stage tables visible to others) of raw.transactions."""
    ensure_schema(conn)
    row = conn.execute(
        "select (select count(*) from raw.transactions), (select count(distinct _batch_id) from raw.transactions),"
        " (select count(*) from raw.transactions_rejected)"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2]), len(stage_tables(conn))


FULL_MONTH_FILES = 29 + 26  # the small files that name every other day of January and February


def write_history(root: Path, rows_per_day: int, seed: int) -> None:
    """Four months of day files, each with a bad line, plus a file whose rows belong to a month no
    file name announces (held back and sent last, after the second connection has committed).
    Small files (49 rows, 1 bad line) name every other day of January and February, so that a load
    over an earlier one replaces those two month tables (one staged on each connection)."""
    for month in range(1, 5):
        for day in (3, 17):
            stamp = f"2024-{month:02d}-{day:02d}"
            write_day(
                root, "transactions", stamp, big_day(rows_per_day, seed=seed + month * 100 + day).replace(b"2024-03-05", stamp.encode())
            )
    write_day(root, "transactions", "2024-02-20", big_day(rows_per_day, seed=seed).replace(b"2024-03-05", b"2024-09-09"))
    for month, last in ((1, 31), (2, 29)):
        for day in set(range(1, last + 1)) - {3, 17} - ({20} if month == 2 else set()):
            stamp = f"2024-{month:02d}-{day:02d}"
            write_day(root, "transactions", stamp, big_day(50, seed=month * 100 + day).replace(b"2024-03-05", stamp.encode()))


def test_reliability_sigkill_during_a_history_load_leaves_the_old_history_or_the_new_one(tmp_path, run_ingest, db, warehouse, reliability):
    """A backfill COPYs on two connections; the second commits its month tables (not yet partitions)
    before the load's transaction attaches them, or drops the month tables they replace. SIGKILL
    at random points, and right when those tables have committed: raw shows the old backfill or the
    new one, never a mix; the retry lands the new one and drops what the killed load left."""
    history = tmp_path / "history"
    write_history(history, 2_000, seed=1)
    assert run_ingest("load", "--history", "--source", str(history)).code == 0
    old = history_state(db)
    write_history(history, 40_000, seed=2)
    new = (9 * (40_000 - 40_000 // 5000) + 49 * FULL_MONTH_FILES, 9 + FULL_MONTH_FILES, 9 * (40_000 // 5000) + FULL_MONTH_FILES, 0)
    rng = random.Random()
    env = {**os.environ, **warehouse, "PIPELINE_RESULT_PATH": str(tmp_path / "killed.json")}
    kill_points = [("staged", 0.0)] * 2 + [("seconds", rng.uniform(0.1, 0.8)) for _ in range(3)]
    for kind, point in kill_points:
        proc = subprocess.Popen([sys.executable, "-m", "ingest.cli", "load", "--history", "--source", str(history)], env=env)
        started = time.monotonic()
        try:
            while proc.poll() is None:
                staged = kind == "staged" and history_state(db)[3] > 0
                if staged or (kind == "seconds" and time.monotonic() - started >= point):
                    os.kill(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.002)
        finally:
            proc.wait(timeout=60)
        wait_for_sessions_to_end(db, "ingest%")
        state = history_state(db)
        assert state[:3] in (old[:3], new[:3]), f"killed at {kind}={point}: raw shows {state}, neither old {old} nor new {new}"
        if proc.returncode == -signal.SIGKILL:
            reliability.fault(survived=state[:3] in (old[:3], new[:3]))
        retry = run_ingest("load", "--history", "--source", str(history))
        assert retry.code == 0, retry.stderr
        assert history_state(db) == new
        write_history(history, 2_000, seed=1)  # back to the old backfill for the next kill
        assert run_ingest("load", "--history", "--source", str(history)).code == 0
        assert history_state(db) == old
        write_history(history, 40_000, seed=2)
    assert reliability.faults_injected >= 3, "the loader finished before most kills: make the files bigger"


# --- a broken landing folder ------------------------------------------------------------------


def test_reliability_unreadable_landing_file_is_a_clear_error_and_writes_nothing(landing, run_ingest, db, warehouse, tmp_path, reliability):
    write_day(landing, "transactions", DAY, TX_HEADER + "\nT1,C1,1.00,2024-03-05,grocery,M1\n")
    assert run_ingest("load", "--ds", DAY, "--source", str(landing)).code == 0
    before = day_state(db)
    day_file = landing / "transactions" / f"{DAY}.csv"
    day_file.write_text(TX_HEADER + "\n" + "T2,C2,2.00,2024-03-05,grocery,M2\n" * 10)
    day_file.chmod(0o000)
    # root reads any file: drop the capabilities that let it (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH)
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    if prefix and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable to this process")
    try:
        proc = subprocess.run(
            [*prefix, sys.executable, "-m", "ingest.cli", "load", "--ds", DAY, "--source", str(landing)],
            env={**os.environ, **warehouse, "PIPELINE_RESULT_PATH": str(tmp_path / "r.json")},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        day_file.chmod(0o644)
    reliability.fault(survived=proc.returncode == ExitCode.FILE_UNREADABLE)
    assert proc.returncode == ExitCode.FILE_UNREADABLE, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"ingest: error: {day_file}: permission denied"]
    assert day_state(db) == before

    day_file.unlink()
    day_file.mkdir()  # a folder where the day's file should be
    run = run_ingest("load", "--ds", DAY, "--source", str(landing))
    reliability.fault(survived=run.code == ExitCode.FILE_UNREADABLE)
    assert run.code == ExitCode.FILE_UNREADABLE and len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
    assert day_state(db) == before


GENERATE_DAYS = ("--start", "2024-03-01", "--end", "2024-03-30", "--bad-row-rate", "0.01")


def mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode == 0


def test_reliability_full_landing_folder_leaves_whole_days_only(tmp_path, run_ingest, db, reliability):
    """The landing folder is a 64 KiB tmpfs: generating 30 days fills it. The generator stops with one
    clear line (exit 16) and leaves only whole day files; every day that landed loads losslessly, a
    day that did not land is exit 10, and a day file cut short (a producer without atomic writes)
    loses no line either: its torn last line is rejected."""
    landing = tmp_path / "full"
    if not mount_tmpfs(landing, "64k"):
        pytest.skip("needs root and mount to create a small tmpfs (a real full disk); not available here")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ingest.cli", "generate", "--out", str(landing), "--customers", "400", *GENERATE_DAYS],
            env={**os.environ, "PIPELINE_RESULT_PATH": str(tmp_path / "gen.json")},
            capture_output=True,
            text=True,
            timeout=120,
        )
        reliability.fault(survived=proc.returncode == ExitCode.LANDING_UNWRITABLE)
        assert proc.returncode == ExitCode.LANDING_UNWRITABLE, (proc.returncode, proc.stderr)
        (line,) = proc.stderr.strip().splitlines()
        assert "No space left on device" in line and "Traceback" not in proc.stderr
        assert not list(landing.rglob(".*.partial")), "a partial day file was left behind"
        days = sorted(p.stem for p in (landing / "transactions").glob("*.csv"))
        assert days and days[-1] < "2024-03-30"
        for day in (days[0], days[-1]):
            content = (landing / "transactions" / f"{day}.csv").read_bytes()
            run = run_ingest("load", "--ds", day, "--source", str(landing))
            assert run.code == 0, run.stderr
            reliability.lines_lost += lines_lost(db, date.fromisoformat(day), content)
        missing = run_ingest("load", "--ds", "2024-03-30", "--source", str(landing))
        assert missing.code == ExitCode.SOURCE_MISSING and "Traceback" not in missing.stderr
        # what a non-atomic producer leaves on a full disk: the file ends mid-line
        torn = (landing / "transactions" / f"{days[0]}.csv").read_bytes()
        torn = torn[: torn.rfind(b"\n", 0, len(torn) - 1) + 12]
        (landing / "transactions" / f"{days[0]}.csv").write_bytes(torn)
        reliability.fault()
        run = run_ingest("load", "--ds", days[0], "--source", str(landing))
        assert run.code == 0 and run.result is not None and run.result["rows_rejected"] >= 1
        lost = lines_lost(db, date.fromisoformat(days[0]), torn)
        reliability.lines_lost += lost
        assert lost == 0
    finally:
        subprocess.run(["umount", "-l", str(landing)], check=False)


def test_reliability_warehouse_restart_mid_copy_fails_cleanly_and_the_retry_succeeds(landing, private_warehouse, reliability):
    """A private embedded PostgreSQL (never the shared one) restarted while `ingest load` is inside
    its COPY: exit 50 (retried by the DAG), one stderr line, nothing of the day committed; the
    retry lands every line."""
    content = big_day(300_000, seed=3)
    write_day(landing, "transactions", DAY, content)
    with psycopg.connect("", autocommit=True) as db:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ingest.cli", "load", "--ds", DAY, "--source", str(landing)],
            env={**os.environ, "PIPELINE_RESULT_PATH": str(landing / "r.json")},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        while proc.poll() is None and not copy_progress(db):
            time.sleep(0.005)
    assert proc.poll() is None, "the load finished before the restart: make the file bigger"
    code, err = restart_warehouse_under(proc, private_warehouse)
    reliability.fault(survived=failed_cleanly_and_retryably(code, err))
    assert failed_cleanly_and_retryably(code, err), (code, err)
    with psycopg.connect("", autocommit=True) as db:
        assert day_state(db) == (0, 0, 0)
        retry = subprocess.run(
            [sys.executable, "-m", "ingest.cli", "load", "--ds", DAY, "--source", str(landing)],
            env={**os.environ, "PIPELINE_RESULT_PATH": str(landing / "r.json")},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert retry.returncode == 0, retry.stderr
        lost = lines_lost(db, DS, content)
        reliability.lines_lost += lost
        assert lost == 0

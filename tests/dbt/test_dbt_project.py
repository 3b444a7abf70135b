"""The dbt feature project against a real PostgreSQL, through the real `dbt-stage` CLI.

Each test loads a small raw fixture (raw tables created with the ingest contract's DDL), builds the
layers as the DAG does, and checks the contract: idempotent reruns, point-in-time features, the
incremental marts equal a full rebuild, transactions-only works, and each planted defect makes
exactly the dbt test that guards against it fail.
"""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest

from tests.dbt.dbt_helpers import PROJECT, build_all, column_types, dbt_stage, stage_env, table_rows, test_outcomes
from tests.dbt.raw_fixtures import CUSTOMER_COLUMNS, TRANSACTION_COLUMNS, create_raw_tables, fixture_customers, insert_rows, load_fixture

pytestmark = [pytest.mark.integration, pytest.mark.slow]

D = "2024-06-01"
FEATURES = "marts.customer_churn_features"
TRAINING = "marts.customer_churn_training_set"
ACTIVITY = "intermediate.int_customer_activity_aggregated_to_daily"
ACTIVITY_ORDER = "customer_id, activity_date, category"
LATER_LOAD = "2024-07-02 07:00:00+00"  # after every fixture load: _loaded_at grows with time, as ingest now() does


def _snapshot(db: psycopg.Connection) -> tuple[list[tuple], list[tuple]]:
    return table_rows(db, FEATURES, "as_of_date, customer_id"), table_rows(db, TRAINING, "cutoff_date, customer_id")


def test_build_is_idempotent_point_in_time_and_honours_the_contract(db: psycopg.Connection, tmp_path: Path) -> None:
    load_fixture(db)
    marts = build_all(tmp_path, D)
    assert marts.result["invocation_id"] and marts.result["tests"]["pass"] > 20
    assert marts.result["models"] == {"success": 2}
    first = _snapshot(db)
    features, training = first
    assert len(features) > 20 and len(training) > 200

    # contract: the same feature columns with the same types in both marts, keys and label columns
    feature_types = column_types(db, FEATURES)
    training_types = column_types(db, TRAINING)
    shared = [c for c in feature_types if c not in ("as_of_date",) and not c.startswith("_")]
    assert [c for c in training_types if c in shared] == shared
    assert all(training_types[c] == feature_types[c] for c in shared)
    assert list(feature_types)[:2] == ["as_of_date", "customer_id"] and list(training_types)[:2] == ["cutoff_date", "customer_id"]
    assert training_types["churned"] == "boolean" and training_types["label_window_end"] == "date"
    assert "_dbt_invocation_id" in feature_types and "_dbt_invocation_id" in training_types
    assert db.execute(f"select count(distinct _dbt_invocation_id) from {FEATURES}").fetchone() == (1,)
    windows = db.execute(f"select count(distinct cutoff_date), max(label_window_end) from {TRAINING}").fetchone()
    assert windows[0] == 12 and windows[1] <= date.fromisoformat(D)

    # the feature SQL (one aggregation per cutoff, read from the activity index) against a plain
    # recomputation from the activity rows, for the features' cutoff and every training cutoff
    cutoffs = [date.fromisoformat(D), *(row[0] for row in db.execute(f"select distinct cutoff_date from {TRAINING}"))]
    expected = _reference_features(db, cutoffs)
    columns = ", ".join(REFERENCE_COLUMNS)
    built = {
        (row[0], row[1]): row[2:]
        for relation, key in ((FEATURES, "as_of_date"), (TRAINING, "cutoff_date"))
        for row in db.execute(f"select {key}, customer_id, {columns} from {relation}")
    }
    assert built.keys() == expected.keys()
    wrong = [k for k in expected if not all(_same(a, b) for a, b in zip(built[k], expected[k], strict=True))]
    assert not wrong, [(k, built[k], expected[k]) for k in wrong[:3]]

    # twice in a row: identical marts
    build_all(tmp_path, D)
    assert _snapshot(db) == first

    # point in time: events on or after D (loaded later) change nothing built for D
    later = [
        {
            "transaction_id": f"LATE{i:04d}",
            "customer_id": f"C{i % 70:05d}",  # includes customers never seen before
            "amount": "999.00",
            "transaction_date": (date.fromisoformat(D) + timedelta(days=i % 10)).isoformat(),
            "category": "luxury",
            "merchant_id": "M999",
            "_partition_date": date.fromisoformat(D) + timedelta(days=i % 10),
        }
        for i in range(40)
    ]
    insert_rows(db, "transactions", TRANSACTION_COLUMNS, later)
    build_all(tmp_path, D)
    assert _snapshot(db) == first


REFERENCE_COLUMNS = (
    "recency_days", "frequency", "monetary_total", "distinct_categories", "mean_days_between_purchases",
    "return_amount_total", "spend_trend", "frequency_trend",
)  # fmt: skip


def _same(built: object, expected: object) -> bool:
    return built == expected if built is None or expected is None else built == pytest.approx(expected, rel=1e-9)


def _trend(now: float, before: float) -> float:
    """spend_trend / frequency_trend: the last trend window against the one before, in [-1, 1]."""
    return (now - before) / (now + before) if now + before else 0.0


def _reference_features(db: psycopg.Connection, cutoffs: list[date]) -> dict[tuple[date, str], tuple]:
    """REFERENCE_COLUMNS per (cutoff, customer) computed in Python from the activity rows, the way
    dbt_project.yml defines them (lookback 365 days, trend windows of 90): what the marts must hold."""
    columns = "customer_id, activity_date, category, purchase_count, purchase_amount, return_amount"
    rows = db.execute(f"select {columns} from {ACTIVITY}").fetchall()
    out = {}
    for cutoff in cutoffs:
        windows: dict[str, list] = {}
        for customer, day, category, purchases, amount, returned in rows:
            if cutoff - timedelta(days=365) <= day < cutoff:
                windows.setdefault(customer, []).append((day, category, purchases, float(amount), float(returned)))
        for customer, window in windows.items():
            bought = [r for r in window if r[2] > 0]
            days = sorted({r[0] for r in bought})
            recent = [r for r in window if r[0] >= cutoff - timedelta(days=90)]
            earlier = [r for r in window if cutoff - timedelta(days=180) <= r[0] < cutoff - timedelta(days=90)]
            out[(cutoff, customer)] = (
                (cutoff - max(r[0] for r in window)).days,
                sum(r[2] for r in window),
                sum(r[3] for r in bought),
                len({r[1] for r in bought}),
                (days[-1] - days[0]).days / (len(days) - 1) if len(days) > 1 else None,
                sum(r[4] for r in window),
                _trend(sum(r[3] for r in recent if r[2] > 0), sum(r[3] for r in earlier if r[2] > 0)),
                _trend(sum(r[2] for r in recent), sum(r[2] for r in earlier)),
            )
    return out


def _next_day_with_new_cutoff(ds: str) -> str:
    """The first day after ds on which another training cutoff's label window closes (the grid of dbt_project.yml)."""
    anchor, cadence, horizon = date(2000, 1, 3), 28, 90
    day = date.fromisoformat(ds) + timedelta(days=1)
    while (day - timedelta(days=horizon) - anchor).days % cadence:
        day += timedelta(days=1)
    return day.isoformat()


def _line(
    transaction_id: str, customer_id: str, amount: str, day: str, category: str, landed: date, loaded_at: str = LATER_LOAD
) -> dict[str, object]:
    return {
        "transaction_id": transaction_id,
        "customer_id": customer_id,
        "amount": amount,
        "transaction_date": day,
        "category": category,
        "merchant_id": "M1",
        "_partition_date": landed,
        "_loaded_at": loaded_at,
    }


def test_incremental_day_equals_full_refresh(db: psycopg.Connection, tmp_path: Path) -> None:
    """The daily path (incremental activity table, incremental marts) ends where a full rebuild ends;
    a re-sent old transaction (history correction) reaches the activity table incrementally too."""
    load_fixture(db)
    build_all(tmp_path, D)
    next_day = _next_day_with_new_cutoff(D)
    landed = date.fromisoformat(next_day) - timedelta(days=1)
    insert_rows(db, "transactions", TRANSACTION_COLUMNS, [_line("NEW0001", "C00001", "12.50", landed.isoformat(), "Home", landed)])
    build_all(tmp_path, next_day)
    incremental_training = table_rows(db, TRAINING, "cutoff_date, customer_id")
    assert db.execute(f"select count(distinct as_of_date) from {FEATURES}").fetchone() == (2,), "backfills keep a history of snapshots"
    next_rows = [r for r in table_rows(db, FEATURES, "as_of_date, customer_id") if r[0].isoformat() == next_day]
    cutoffs = {r[0] for r in incremental_training}
    assert len(cutoffs) == 12 and max(cutoffs) + timedelta(days=90) == date.fromisoformat(next_day)

    full = dbt_stage(tmp_path, "build", "--layer", "marts", "--ds", next_day, "--full-refresh")
    assert full.returncode == 0, full.stderr
    assert table_rows(db, TRAINING, "cutoff_date, customer_id") == incremental_training
    assert table_rows(db, FEATURES, "as_of_date, customer_id") == next_rows

    # a re-sent old transaction with a corrected amount: the incremental activity table picks it up
    old = db.execute(
        "select transaction_id, customer_id, transaction_date, category from raw.transactions order by transaction_id limit 1"
    ).fetchone()
    insert_rows(
        db, "transactions", TRANSACTION_COLUMNS, [_line(old[0], old[1], "777.77", old[2], old[3], landed, "2024-07-03 07:00:00+00")]
    )
    assert dbt_stage(tmp_path, "build", "--layer", "intermediate", "--ds", next_day).returncode == 0
    incremental_daily = table_rows(db, ACTIVITY, ACTIVITY_ORDER)
    corrected_day = [r for r in incremental_daily if r[0] == old[1] and r[1].isoformat() == old[2]]
    assert any(float(r[4]) >= 777.77 for r in corrected_day), "the re-sent amount replaced the old one"
    assert dbt_stage(tmp_path, "build", "--layer", "intermediate", "--ds", next_day, "--full-refresh").returncode == 0
    assert table_rows(db, ACTIVITY, ACTIVITY_ORDER) == incremental_daily


def _raw_partition_reads(db: psycopg.Connection) -> dict[str, int]:
    """Scans (sequential and index) of each raw.transactions day partition so far, from the server's statistics."""
    db.execute("select pg_stat_clear_snapshot()")
    rows = db.execute(
        "select relname, seq_scan + coalesce(idx_scan, 0) from pg_stat_user_tables"
        " where schemaname = 'raw' and relname like 'transactions\\_d%' order by relname"
    ).fetchall()
    return dict(rows)


def test_daily_activity_build_reads_only_the_new_days_partitions_and_moves_a_re_dated_transaction(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    """The daily intermediate build costs the day's new lines, not the history: no raw partition
    older than the day is read (ids are looked up in the ledger, new lines found through the load
    log). A re-sent transaction with a corrected date leaves its old day and joins the new one,
    exactly as a full rebuild places it."""
    load_fixture(db)
    build_all(tmp_path, D)
    landed = date.fromisoformat(D)
    next_day = (landed + timedelta(days=1)).isoformat()

    insert_rows(db, "transactions", TRANSACTION_COLUMNS, [_line("NEW0002", "C00002", "30.00", D, "Home", landed)])
    before = _raw_partition_reads(db)
    assert dbt_stage(tmp_path, "build", "--layer", "intermediate", "--ds", next_day).returncode == 0
    after = _raw_partition_reads(db)
    read = sorted(name for name in after if after[name] != before.get(name, 0))
    day_partition = f"transactions_d{landed:%Y%m%d}"
    history = [name for name in read if name < day_partition]  # (the fixture also has days after D: never history)
    assert day_partition in read and history == [], f"the daily build read history partitions: {history}"

    # the re-send: same id, same customer and amount, the date moved one day later
    tid, customer, amount, old_day, category = db.execute(
        "select transaction_id, customer_id, amount, transaction_date, category from raw.transactions"
        " where transaction_date < %s and amount !~ '^-' order by transaction_id limit 1",
        (str(landed - timedelta(days=30)),),
    ).fetchone()
    new_day = (date.fromisoformat(old_day) + timedelta(days=1)).isoformat()
    before_old = [r for r in table_rows(db, ACTIVITY, ACTIVITY_ORDER) if r[0] == customer and r[1].isoformat() == old_day]
    insert_rows(
        db, "transactions", TRANSACTION_COLUMNS, [_line(tid, customer, amount, new_day, category, landed, "2024-07-03 07:00:00+00")]
    )
    assert dbt_stage(tmp_path, "build", "--layer", "intermediate", "--ds", next_day).returncode == 0
    incremental = table_rows(db, ACTIVITY, ACTIVITY_ORDER)
    after_old = [r for r in incremental if r[0] == customer and r[1].isoformat() == old_day]
    assert sum(r[3] for r in after_old) == sum(r[3] for r in before_old) - 1, (
        "the transaction left its old day (even though no row is left for that customer on it)"
    )
    assert dbt_stage(tmp_path, "build", "--layer", "intermediate", "--ds", next_day, "--full-refresh").returncode == 0
    assert table_rows(db, ACTIVITY, ACTIVITY_ORDER) == incremental


def test_transactions_only_then_customers_arrive(db: psycopg.Connection, tmp_path: Path) -> None:
    load_fixture(db, with_customers=False)
    build_all(tmp_path, D)
    known = "count(*) filter (where region <> 'unknown' or account_type <> 'unknown')"
    unknown = db.execute(f"select count(*), count(*) filter (where age_band <> 'unknown'), {known} from {FEATURES}")
    total, with_age, with_region = unknown.fetchone()
    assert total > 0 and with_age == 0 and with_region == 0
    freshness = dbt_stage(tmp_path, "freshness", "--ds", D)
    assert freshness.result["sources"]["raw.customers"] == {"status": "missing"}

    # the customers table appears later: the next build picks the demographics up
    create_raw_tables(db, customers=True)
    insert_rows(db, "customers", CUSTOMER_COLUMNS, fixture_customers(60, date(2023, 1, 1)))
    build_all(tmp_path, D)
    regions = {r[0] for r in db.execute(f"select distinct region from {FEATURES}")}
    assert {"north", "south", "east", "west"} <= regions, regions

    docs = dbt_stage(tmp_path, "docs", "--ds", D)
    assert docs.returncode == 0, docs.stderr
    assert (tmp_path / "target" / "catalog.json").is_file()


PLANTED_DEFECTS = [
    # (defect, SQL that plants it in the table the test guards, the one dbt test that must fail)
    (
        "future-dated event in a feature row",
        f"update {TRAINING} set _last_event_date = cutoff_date + 3 where ctid = (select min(ctid) from {TRAINING})",
        "point_in_time_customer_churn_training_set_cutoff_date___last_event_date__recency_days",
    ),
    (
        "duplicate key",
        f"insert into {FEATURES} select * from {FEATURES} where as_of_date = '{D}' limit 1",
        "unique_combination_of_columns_customer_churn_features_as_of_date__customer_id",
    ),
    (
        "negative spend",
        f"update {TRAINING} set monetary_total = -monetary_total where ctid = (select min(ctid) from {TRAINING} where monetary_total > 0)",
        "accepted_range_customer_churn_training_set_monetary_total__0",
    ),
]


def test_planted_defects_fail_exactly_the_intended_test(db: psycopg.Connection, tmp_path: Path) -> None:
    """Staging would (rightly) drop such rows from raw data, so each defect is planted where its test
    looks, in a copy of the mart restored afterwards; the clean run proves no test fails without it."""
    load_fixture(db)
    build_all(tmp_path, D)
    clean = test_outcomes(tmp_path, D, "marts")
    assert not {name for name, status in clean.items() if status in ("fail", "error")}
    for table in (FEATURES, TRAINING):
        db.execute(f"create table {table}_backup as select * from {table}")
    for defect, plant, expected in PLANTED_DEFECTS:
        assert expected in clean, f"unknown test {expected}"
        db.execute(plant)
        outcomes = test_outcomes(tmp_path, D, "marts")
        failed = {name for name, status in outcomes.items() if status in ("fail", "error")}
        assert failed == {expected}, f"{defect}: failed {failed}"
        for table in (FEATURES, TRAINING):
            db.execute(f"truncate {table}; insert into {table} select * from {table}_backup")


def _day_of_lines(day: date, total: int, invalid: int) -> list[dict[str, object]]:
    """`total` lines landed on `day`, `invalid` of them bad in rotating ways (future date, zero amount,
    unparseable date, missing customer)."""
    bad = [
        {"transaction_date": (day + timedelta(days=5)).isoformat()},
        {"amount": "0"},
        {"transaction_date": "2024-13-45"},
        {"customer_id": "  "},
    ]
    rows = []
    for i in range(total):
        row: dict[str, object] = {
            "transaction_id": f"G{day:%Y%m%d}{i:05d}",
            "customer_id": f"C{i % 60:05d}",
            "amount": "10.00",
            "transaction_date": day.isoformat(),
            "category": "Grocery",
            "merchant_id": "M001",
            "_partition_date": day,
        }
        if i < invalid:
            row.update(bad[i % len(bad)])
        rows.append(row)
    return rows


@pytest.mark.parametrize(
    ("lines", "invalid", "exit_code", "status"),
    [(1000, 30, 0, "warn"), (1000, 100, 20, "fail"), (50, 10, 0, "pass")],
    ids=["3pct-warns", "10pct-stops", "low-volume-not-judged"],
)
def test_exclusion_gate_on_a_load_day(
    db: psycopg.Connection, tmp_path: Path, lines: int, invalid: int, exit_code: int, status: str
) -> None:
    day = date(2024, 6, 1)
    create_raw_tables(db)
    insert_rows(db, "transactions", TRANSACTION_COLUMNS, _day_of_lines(day, lines, invalid))
    run = dbt_stage(tmp_path, "build", "--layer", "staging", "--ds", day.isoformat())
    assert run.returncode == exit_code, run.stderr
    gate = "excluded_rows_within_threshold_audit_raw__transactions_exclusions_"
    if status == "fail":
        assert run.result["failures"] == [f"test {gate}: fail"]
        assert "excluded_rows_within_threshold" in run.stderr
    elif status == "warn":
        assert run.result["warnings"] == [f"test {gate}"]
    else:
        assert "failures" not in run.result and "warnings" not in run.result
    reasons = dict(db.execute("select exclusion_reason, excluded_rows from staging.audit_raw__transactions_exclusions").fetchall())
    assert sum(reasons.values()) == invalid
    assert set(reasons) == {"future_date", "zero_amount", "unparseable_date", "missing_customer"}
    assert db.execute("select count(*) from staging.stg_raw__transactions").fetchone() == (lines - invalid,)


def test_exit_codes(db: psycopg.Connection, tmp_path: Path) -> None:
    # no raw tables yet: a model cannot run -> TRANSFORM_ERROR, one line on stderr
    no_raw = dbt_stage(tmp_path, "build", "--layer", "staging", "--ds", D)
    assert no_raw.returncode == 21, no_raw.stderr
    assert no_raw.stderr.startswith("dbt: error: dbt build failed: model base_raw__transactions: error")
    assert len(no_raw.stderr.strip().splitlines()) == 1
    assert no_raw.result["invocation_id"] and no_raw.result["exit_code"] == 21

    bad_date = dbt_stage(tmp_path, "build", "--layer", "marts", "--ds", "2024-02-30")
    assert bad_date.returncode == 15 and "YYYY-MM-DD" in bad_date.stderr

    nowhere = {**stage_env(tmp_path), "PGHOST": "127.0.0.1", "PGPORT": "1"}
    unreachable = dbt_stage(tmp_path, "build", "--layer", "marts", "--ds", D, env=nowhere)
    assert unreachable.returncode == 50 and "cannot reach the warehouse" in unreachable.stderr


def test_a_new_date_reuses_the_previous_parse(db: psycopg.Connection, tmp_path: Path) -> None:
    """dbt-stage hands the date over in the environment, read at execution: the next day's build
    re-uses the previous day's parse (a new `--vars` would make dbt parse the whole project again),
    and its tests filter on the new date."""
    load_fixture(db)
    first = dbt_stage(tmp_path, "build", "--layer", "staging", "--ds", D)
    assert first.returncode == 0, first.stderr
    assert "Unable to do partial parsing" in first.stdout, "the first build parses from scratch (no saved parse yet)"
    next_day = (date.fromisoformat(D) + timedelta(days=1)).isoformat()
    second = dbt_stage(tmp_path, "build", "--layer", "staging", "--ds", next_day)
    assert second.returncode == 0, second.stderr
    assert re.search(r"Found \d+ models", second.stdout) and "Unable to do partial parsing" not in second.stdout
    run_results = json.loads((tmp_path / "target" / "run_results.json").read_text())
    unique_test = [r for r in run_results["results"] if r["unique_id"].startswith("test.churn.unique_stg_raw__transactions_transaction_id")]
    assert len(unique_test) == 1 and f"load_date > cast('{next_day}' as date) - 2" in unique_test[0]["compiled_code"]


def test_nothing_the_parse_stores_depends_on_the_date(tmp_path: Path) -> None:
    """Why re-using a parse across dates is safe: the manifests parsed for two dates are the same
    (a `where` written as {{ var('as_of_date') }} would be rendered into the manifest at parse time;
    tests write __as_of_date__, resolved at execution by get_where_subquery)."""
    from dbt.cli.main import dbtRunner

    nodes = []
    for ds in ("2024-06-01", "2025-01-15"):
        target = tmp_path / ds
        args = ["parse", "--vars", json.dumps({"as_of_date": ds}), "--project-dir", str(PROJECT), "--profiles-dir", str(PROJECT)]
        assert dbtRunner().invoke([*args, "--target-path", str(target), "--quiet"]).success
        manifest = json.loads((target / "manifest.json").read_text())
        nodes.append({key: {k: v for k, v in node.items() if k != "created_at"} for key, node in manifest["nodes"].items()})
    assert len(nodes[0]) > 80
    assert [key for key in nodes[0] if nodes[0][key] != nodes[1].get(key)] == []


def test_as_of_date_is_required_and_parse_writes_the_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dbt.cli.main import dbtRunner

    monkeypatch.delenv("PIPELINE_AS_OF_DATE", raising=False)
    env = stage_env(tmp_path)
    common = ["--project-dir", str(PROJECT), "--profiles-dir", str(PROJECT), "--target-path", env["DBT_TARGET_PATH"], "--quiet"]
    parsed = dbtRunner().invoke(["parse", *common])
    assert parsed.success
    manifest = json.loads((tmp_path / "target" / "manifest.json").read_text())
    assert "model.churn.customer_churn_features" in manifest["nodes"]
    assert manifest["nodes"]["model.churn.customer_churn_training_set"]["schema"] == "marts"

    compiled = dbtRunner().invoke(["compile", "--select", "customer_churn_features", "--no-populate-cache", *common])
    assert not compiled.success
    assert "as_of_date is required" in str(compiled.exception or compiled.result.results[0].message)

"""Benchmark of the dbt stage: a full build versus the incremental build of one new day.

For each size (default 5,000 and 50,000 customers, two years of history) it fills a scratch database
on the warehouse server with raw transactions and customers (SQL generate_series, seeded, dirty
like the real feed), then times through the real CLI (`dbt-stage build --layer all`):

  full         `--full-refresh` for D-1: every model and test from scratch, 12 training snapshots
  incremental  the next day D: the new day's feature snapshot; training cutoffs already held are kept

and prints both times and their ratio (target: incremental <= 25% of full at 50,000), twice: the wall
clock of the CLI process (includes ~10 s of Python start-up and dbt parsing, the same for both) and
dbt's own execution time from run_results.json (models and tests only).

Run from the repository root (warehouse from PG* or the embedded one):
    uv run --project dbt python bench/dbt.py [--customers 5000,50000] [--days 730] [--ds 2025-01-01]
To time an already loaded warehouse instead (e.g. after `ingest load` of generated landing files),
point PG* at it and pass `--existing --ds D`: nothing is generated or dropped; the full build runs
for D-1 and the incremental one for D.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from _common import conninfo
from mlp_common.embedded import ensure_warehouse
from mlp_common.warehouse import drop_database

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.dbt.raw_fixtures import create_partitions, create_raw_tables  # noqa: E402  (the ingest contract's DDL)

GENERATE_CUSTOMERS = """
insert into raw.customers (customer_id, age, region, account_type, signup_date, _line_number, _partition_date, _batch_id)
select
    'C' || lpad(c::text, 6, '0'),
    case when c %% 50 = 0 then 'n/a' else (18 + (hashint4(c) & 63))::text end,
    (array['north', ' South', 'EAST', 'west '])[1 + (hashint4(c + 1) & 3)],
    (array['basic', 'premium', 'Gold'])[1 + abs(hashint4(c + 2)) %% 3],
    (%(start)s::date - (abs(hashint4(c + 3)) %% 400))::text,
    c,
    %(start)s::date - (abs(hashint4(c + 3)) %% 400),
    1
from generate_series(1, %(customers)s) as c
"""

# Each customer is active from a start day until a stop day (many stop: churn) and buys about once a
# month; ~5% of lines are returns, ~0.5% zero amounts, categories arrive in mixed case.
GENERATE_TRANSACTIONS = """
insert into raw.transactions
    (transaction_id, customer_id, amount, transaction_date, category, merchant_id,
     _line_number, _partition_date, _batch_id, _loaded_at)
with customers as (
    select
        c,
        first_day,
        least(%(days)s, first_day + 60 + (random() * %(days)s * 1.2)::int) as last_day
    from (select c, (random() * %(days)s * 0.6)::int as first_day from generate_series(1, %(customers)s) as c) as s
),
lines as (
    select
        c,
        first_day + (random() * greatest(last_day - first_day - 1, 0))::int as day_offset,
        random() as r
    from customers
    cross join lateral generate_series(1, greatest(1, ((last_day - first_day) / 30.0 * (0.4 + random() * 1.6))::int)) as n
)
select
    'T' || row_number() over (),
    'C' || lpad(c::text, 6, '0'),
    case
        when r < 0.005 then '0'
        when r < 0.055 then to_char(-(5 + r * 400), 'FM9990.00')
        else to_char(5 + (r * r) * 300, 'FM9990.00')
    end,
    (%(start)s::date + day_offset)::text,
    (array['grocery', ' Grocery', 'ELECTRONICS', 'home', 'Toys', 'sports '])[1 + (c + day_offset) %% 6],
    'M' || (c %% 97),
    row_number() over (),
    %(start)s::date + day_offset,
    2,
    (%(start)s::date + day_offset)::timestamp + interval '26 hours'
from lines
"""


def generate(env: dict[str, str], dbname: str, customers: int, days: int, ds: date) -> int:
    start = ds - timedelta(days=days)
    admin = conninfo(env, env.get("PGDATABASE") or "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        drop_database(conn, dbname)
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
    with psycopg.connect(conninfo(env, dbname), autocommit=True) as conn:
        create_raw_tables(conn, customers=True)
        create_partitions(conn, "customers", (start - timedelta(days=d) for d in range(400)))
        create_partitions(conn, "transactions", (start + timedelta(days=d) for d in range(days + 1)))
        conn.execute("select setseed(0.42)")
        params = {"customers": customers, "days": days, "start": start}
        conn.execute(GENERATE_CUSTOMERS, params)
        conn.execute(GENERATE_TRANSACTIONS, params)
        conn.execute("delete from raw.transactions where _partition_date >= %s", (ds,))
        conn.execute("analyze raw.transactions")
        conn.execute("analyze raw.customers")
        row = conn.execute("select count(*) from raw.transactions").fetchone()
        return int(row[0]) if row else 0


def timed_build(env: dict[str, str], ds: date, *extra: str) -> tuple[float, float]:
    """(wall seconds of the CLI process, dbt's execution seconds: models and tests, without start-up and parsing)."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "dbt_stage.cli", "build", "--layer", "all", "--ds", ds.isoformat(), *extra],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"dbt-stage build --ds {ds} failed (exit {proc.returncode}): {proc.stderr.strip()}")
    result = json.loads(Path(env["PIPELINE_RESULT_PATH"]).read_text())
    return seconds, float(result["execution_seconds"])


def bench(env: dict[str, str], ds: date) -> tuple[tuple[float, float], tuple[float, float]]:
    full = timed_build(env, ds - timedelta(days=1), "--full-refresh")
    incremental = timed_build(env, ds)
    return full, incremental


def report(label: str, rows: str, full: tuple[float, float], incremental: tuple[float, float]) -> None:
    print(
        f"{label:>10} {rows:>10} | {full[0]:8.1f} {incremental[0]:8.1f} {incremental[0] / full[0]:7.1%}"
        f" | {full[1]:8.1f} {incremental[1]:8.1f} {incremental[1] / full[1]:7.1%}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--customers", default="5000,50000", help="comma-separated sizes")
    parser.add_argument("--days", type=int, default=730, help="days of history before --ds")
    parser.add_argument("--ds", default="2025-01-01", help="the incremental day D (full build: D-1)")
    parser.add_argument("--existing", action="store_true", help="time the warehouse PG* points at, as loaded")
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    args = parser.parse_args()
    ds = date.fromisoformat(args.ds)
    server = ensure_warehouse()
    base_env = {
        **os.environ,
        **server,
        "DBT_PROJECT_DIR": str(REPO / "dbt"),
        "DBT_PROFILES_DIR": str(REPO / "dbt"),
        "DBT_TARGET_PATH": str(REPO / "bench" / "results" / "target"),
        "DBT_LOG_PATH": str(REPO / "bench" / "results" / "logs"),
        "DBT_LOG_FORMAT": "text",
        "PIPELINE_RESULT_PATH": str(REPO / "bench" / "results" / "result.json"),
    }
    print(f"{'':>21} | {'wall clock (CLI process)':^25} | {'dbt execution (run_results)':^25}")
    print(f"{'customers':>10} {'raw rows':>10} | {'full s':>8} {'incr s':>8} {'ratio':>7} | {'full s':>8} {'incr s':>8} {'ratio':>7}")
    if args.existing:
        full, incremental = bench(base_env, ds)
        report("existing", "-", full, incremental)
        return
    for customers in (int(c) for c in args.customers.split(",")):
        dbname = f"bench_dbt_{customers}"
        rows = generate(base_env, dbname, customers, args.days, ds)
        full, incremental = bench({**base_env, "PGDATABASE": dbname}, ds)
        report(str(customers), str(rows), full, incremental)
        if not args.keep:
            with psycopg.connect(conninfo(base_env, base_env.get("PGDATABASE") or "postgres"), autocommit=True) as conn:
                drop_database(conn, dbname)


if __name__ == "__main__":
    main()

"""Raw tables and small fixture data for the dbt tests and the benchmark.

The raw DDL is the ingest contract's own: the dbt environment does not install the ingest package,
so `contract.py` is loaded from its file (it only needs the standard library). The tables are
therefore exactly what `ingest load` creates.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from pathlib import Path
from types import ModuleType

import psycopg

CONTRACT_FILE = Path(__file__).resolve().parents[2] / "ingest" / "src" / "ingest" / "contract.py"

TRANSACTION_COLUMNS = ("transaction_id", "customer_id", "amount", "transaction_date", "category", "merchant_id")
CUSTOMER_COLUMNS = ("customer_id", "age", "region", "account_type", "signup_date")


def ingest_contract() -> ModuleType:
    """ingest/src/ingest/contract.py, loaded by path (the ingest package is not in the dbt env)."""
    spec = importlib.util.spec_from_file_location("ingest_contract_for_dbt_tests", CONTRACT_FILE)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(CONTRACT_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def create_raw_tables(conn: psycopg.Connection, *, customers: bool = True) -> None:
    """The raw landing tables exactly as ingest creates them (transactions; customers unless told not to)."""
    contract = ingest_contract()
    for name in ("transactions", "customers") if customers else ("transactions",):
        table = contract.TABLES[name]
        assert tuple(table.columns) == (TRANSACTION_COLUMNS if name == "transactions" else CUSTOMER_COLUMNS)
        conn.execute(contract.ddl(table))


def create_partitions(conn: psycopg.Connection, table: str, days: Iterable[date]) -> None:
    """The day partitions of a raw table (list-partitioned by `_partition_date`), as ingest creates them."""
    contract = ingest_contract()
    for day in sorted(set(days)):
        conn.execute(contract.partition_ddl(contract.TABLES[table], day))


def insert_rows(conn: psycopg.Connection, table: str, columns: Sequence[str], rows: Iterable[dict[str, object]]) -> int:
    """COPY rows (dicts with the source columns plus _partition_date and optional _loaded_at), and
    log them as one batch in raw.load_batches as ingest does (incremental builds find new lines
    through that log)."""
    rows = list(rows)
    create_partitions(conn, table, (_as_date(r["_partition_date"]) for r in rows))
    if rows:
        loaded_at = max(str(r.get("_loaded_at", f"{r['_partition_date']} 06:00:00+00")) for r in rows)
        record_batch(conn, table, sorted({_as_date(r["_partition_date"]) for r in rows}), loaded_at)
    names = (*columns, "_line_number", "_partition_date", "_batch_id", "_loaded_at")
    count = 0
    with conn.cursor() as cur, cur.copy(f"copy raw.{table} ({', '.join(names)}) from stdin") as copy:
        for i, row in enumerate(rows, start=1):
            partition = row["_partition_date"]
            copy.write_row(
                (
                    *(row.get(c) for c in columns),
                    row.get("_line_number", i),
                    partition,
                    1,
                    row.get("_loaded_at", f"{partition} 06:00:00+00"),
                )
            )
            count += 1
    return count


def record_batch(conn: psycopg.Connection, table: str, days: Sequence[date], loaded_at: str | None = None) -> None:
    """A row of raw.load_batches for lines written to `days` (at `loaded_at`, else now(): the
    lines' own default in the same transaction)."""
    conn.execute(
        "insert into raw.load_batches (table_name, mode, source_file, partition_dates, loaded_at)"
        " values (%s, 'daily', 'test fixture', %s, coalesce(cast(%s as timestamptz), now()))",
        (table, list(days), loaded_at),
    )


def _as_date(value: object) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


CATEGORIES = ("grocery", "  Grocery ", "ELECTRONICS", "home", "Toys", "sports")
REGIONS = ("north", "South ", "east", "west")
ACCOUNT_TYPES = ("basic", "premium", "Gold")


def fixture_transactions(customers: int, start: date, end: date, seed: int = 7) -> list[dict[str, object]]:
    """Clean-ish transactions for `customers` customers in [start, end): each customer buys at a personal
    rate and may stop (churn) at a random date; about 5% of purchases are later returned. Dirty text
    (category case and whitespace) is kept, because staging must clean it."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    days = (end - start).days
    tid = 0
    for c in range(customers):
        customer_id = f"C{c:05d}"
        rate = rng.uniform(0.03, 0.25)
        first = rng.randrange(0, days // 2)
        stop = rng.randrange(first + 30, days + 200)
        for d in range(first, min(stop, days)):
            if rng.random() >= rate:
                continue
            day = start + timedelta(days=d)
            tid += 1
            amount = round(rng.lognormvariate(3.0, 0.6), 2)
            rows.append(
                {
                    "transaction_id": f"T{tid:08d}",
                    "customer_id": customer_id,
                    "amount": f"{amount:.2f}",
                    "transaction_date": day.isoformat(),
                    "category": rng.choice(CATEGORIES),
                    "merchant_id": f"M{rng.randrange(50):03d}",
                    "_partition_date": day,
                }
            )
            if rng.random() < 0.05 and d + 3 < days:
                tid += 1
                back = day + timedelta(days=3)
                rows.append(
                    {
                        "transaction_id": f"T{tid:08d}",
                        "customer_id": customer_id,
                        "amount": f"-{amount:.2f}",
                        "transaction_date": back.isoformat(),
                        "category": rows[-1]["category"],
                        "merchant_id": rows[-1]["merchant_id"],
                        "_partition_date": back,
                    }
                )
    return rows


def fixture_customers(customers: int, start: date, seed: int = 11) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for c in range(customers):
        signup = start - timedelta(days=rng.randrange(0, 400))
        rows.append(
            {
                "customer_id": f"C{c:05d}",
                "age": str(rng.randrange(18, 90)) if rng.random() > 0.05 else "unknown",
                "region": rng.choice(REGIONS),
                "account_type": rng.choice(ACCOUNT_TYPES),
                "signup_date": signup.isoformat(),
                "_partition_date": signup,
            }
        )
    return rows


def load_fixture(
    conn: psycopg.Connection,
    *,
    customers: int = 60,
    start: date = date(2023, 1, 1),
    end: date = date(2024, 7, 1),
    with_customers: bool = True,
) -> None:
    """A small warehouse: ~18 months of transactions for `customers` customers (+ their attributes)."""
    create_raw_tables(conn, customers=with_customers)
    insert_rows(conn, "transactions", TRANSACTION_COLUMNS, fixture_transactions(customers, start, end))
    if with_customers:
        insert_rows(conn, "customers", CUSTOMER_COLUMNS, fixture_customers(customers, start))
    conn.execute("analyze raw.transactions")

"""Helpers for ingest tests: write landing files, read what landed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

TX_HEADER = "transaction_id,customer_id,amount,transaction_date,category,merchant_id"
CUSTOMER_HEADER = "customer_id,age,region,account_type,signup_date"


@dataclass
class CliRun:
    code: int
    stdout: str
    stderr: str
    result: dict[str, Any] | None


def write_day(root: Path, table: str, day: str, content: bytes | str, suffix: str = ".csv") -> Path:
    path = root / table / f"{day}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def rows(db, sql: str, *params: Any) -> list[tuple[Any, ...]]:  # type: ignore[no-untyped-def]
    return db.execute(sql, params).fetchall()


def stage_tables(db) -> list[str]:  # type: ignore[no-untyped-def]
    """The stage tables a history load's second connection made (`ingest.stages`) that still exist."""
    return [r[0] for r in rows(db, "select relname::text from pg_class where relname like '\\_stage\\_%%' order by 1")]

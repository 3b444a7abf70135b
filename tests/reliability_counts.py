"""What the reliability suite injected, tried and lost: one JSON line per test, totals at the end.

Every `test_reliability_*.py` test records its figures through `record()` (or the `reliability`
fixture of `tests/conftest.py`): faults injected and survived, bad inputs tried, input lines lost.
The lines go to `$RELIABILITY_COUNTS`, else `<repo>/.data/reliability/counts.jsonl`; each stage's
pytest session prints its own totals, and `tests/reliability_report.py` (run by `make test` after
every stage's suite) prints the totals of the whole run and fails when a line was lost.

Only the standard library: this module is imported from every stage's environment.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
COUNTS_ENV = "RELIABILITY_COUNTS"
FIELDS = ("faults_injected", "faults_survived", "bad_inputs", "lines_lost")


def counts_path() -> Path:
    configured = os.environ.get(COUNTS_ENV)
    return Path(configured) if configured else REPO_ROOT / ".data" / "reliability" / "counts.jsonl"


def record(test: str, **figures: int) -> None:
    """Append one test's figures (keys from FIELDS) as a JSON line; safe from concurrent sessions."""
    unknown = set(figures) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown reliability figures {sorted(unknown)}; use {FIELDS}")
    path = counts_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"test": test, "session": os.getpid(), **{k: int(figures.get(k, 0)) for k in FIELDS}}) + "\n"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(line)


def read(path: Path | None = None, session: int | None = None) -> list[dict[str, Any]]:
    """The recorded lines (of one pytest session when `session` is its pid)."""
    path = path or counts_path()
    if not path.is_file():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if session is None or line.get("session") == session]


def totals(lines: list[dict[str, Any]]) -> dict[str, int]:
    summed = {k: sum(int(line.get(k, 0)) for line in lines) for k in FIELDS}
    return {"tests": len(lines), **summed}


def format_totals(figures: dict[str, int]) -> str:
    return (
        f"reliability: {figures['tests']} tests recorded; faults injected {figures['faults_injected']}, "
        f"survived {figures['faults_survived']}; bad inputs tried {figures['bad_inputs']}; lines lost {figures['lines_lost']}"
    )

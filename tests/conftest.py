"""Fixtures shared by every stage's tests: a real PostgreSQL, one fresh database per test.

The server is the caller's when PG* variables are set, else the embedded one (started once and
left running). Each test gets its own database, so tests never see each other's rows; the
libpq variables point at it, so stage CLIs started as subprocesses use it too.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from mlp_common.embedded import ensure_warehouse, start_embedded, stop_embedded
from mlp_common.warehouse import drop_database
from tests import reliability_counts
from tests.db_helpers import conninfo


@pytest.fixture(scope="session")
def warehouse_server() -> dict[str, str]:
    """libpq settings of the server the tests use (started if need be)."""
    return ensure_warehouse()


@pytest.fixture
def warehouse(warehouse_server: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A fresh, empty database for one test; PG* variables point at it for the test's duration."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = {**warehouse_server, "PGDATABASE": warehouse_server.get("PGDATABASE", "postgres")}
    with psycopg.connect(conninfo(admin), autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    env = {**warehouse_server, "PGDATABASE": name}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        yield env
    finally:
        with psycopg.connect(conninfo(admin), autocommit=True) as conn:
            drop_database(conn, name)


@pytest.fixture
def db(warehouse: dict[str, str]) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test's database."""
    with psycopg.connect(conninfo(warehouse), autocommit=True) as conn:
        yield conn


def stage_env(**overrides: str) -> dict[str, str]:
    """The environment for a stage subprocess: the current one (PG* included) plus overrides."""
    return {**os.environ, **overrides}


@pytest.fixture
def private_warehouse(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An embedded PostgreSQL of the test's own (never the shared one), which the test may restart;
    PG* point at it. Yields its state folder (for `tests.faults.restart_warehouse_under`)."""
    root = tmp_path_factory.mktemp("private-warehouse")
    for key, value in start_embedded(root).items():
        monkeypatch.setenv(key, value)
    try:
        yield root
    finally:
        stop_embedded(root)


@dataclass
class ReliabilityTally:
    """What one reliability test injected, tried and lost; written to the counts file at teardown."""

    faults_injected: int = 0
    faults_survived: int = 0
    bad_inputs: int = 0
    lines_lost: int = 0

    def fault(self, survived: bool = True) -> None:
        self.faults_injected += 1
        self.faults_survived += int(survived)


@pytest.fixture
def reliability(request: pytest.FixtureRequest) -> Iterator[ReliabilityTally]:
    """Count faults and bad inputs of a `test_reliability_*` test (see tests/reliability_counts.py)."""
    tally = ReliabilityTally()
    yield tally
    reliability_counts.record(request.node.nodeid, **vars(tally))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = reliability_counts.read(session=os.getpid())
    if lines:
        terminalreporter.write_line(reliability_counts.format_totals(reliability_counts.totals(lines)))

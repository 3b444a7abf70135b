"""Fixtures for ingest tests: a landing folder and the real `ingest` CLI run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ingest.helpers import CliRun


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    root = tmp_path / "landing"
    root.mkdir()
    return root


@pytest.fixture
def run_ingest(tmp_path: Path, warehouse: dict[str, str]):  # type: ignore[no-untyped-def]
    """Run the real `ingest` CLI in a subprocess against the test database; return code, output, result JSON."""
    counter = iter(range(10**6))

    def run(*args: str, env: dict[str, str] | None = None) -> CliRun:
        result_path = tmp_path / f"result-{next(counter)}.json"
        full_env = {**os.environ, **warehouse, "PIPELINE_RESULT_PATH": str(result_path), **(env or {})}
        proc = subprocess.run([sys.executable, "-m", "ingest.cli", *args], capture_output=True, text=True, env=full_env, timeout=120)
        path = Path(full_env["PIPELINE_RESULT_PATH"])
        result = json.loads(path.read_text()) if path.exists() else None
        return CliRun(proc.returncode, proc.stdout, proc.stderr, result)

    return run

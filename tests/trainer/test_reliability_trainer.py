"""Reliability of training (issue 10): SIGKILL at random points of `trainer train` leaves the
registry consistent (every version whole and verifiable, exactly one champion) and a retry completes."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from mlp_common import registry
from tests.db_helpers import wait_for_sessions_to_end
from tests.faults import kill_after
from tests.trainer.trainer_helpers import DS, champion_version, load_synthetic, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

TRAIN = ("train", "--ds", str(DS), "--auc-floor", "0.6", "--tolerance", "0.0")


def registry_is_consistent(db: psycopg.Connection) -> None:
    """Every registered version loads sha256-verified; one champion, pointing at such a version."""
    versions = [int(r[0]) for r in db.execute("select version from ml.model_versions order by 1")]
    for version in versions:
        assert registry.load_artifact(db, registry.get_version(db, version))
    champions = db.execute("select version from ml.model_champion").fetchall()
    assert len(champions) == 1 and champions[0][0] in versions
    promoted = db.execute("select count(*) from ml.model_promotions where promoted and version <> all(%s)", (versions,)).fetchone()
    assert promoted == (0,)


def test_reliability_sigkill_during_training_leaves_a_consistent_registry(db: psycopg.Connection, tmp_path: Path, reliability) -> None:
    load_synthetic(db)
    started = time.monotonic()
    first = run_cli(*TRAIN, tmp_path=tmp_path)
    assert first.code == 0, first.stderr
    full_seconds = time.monotonic() - started
    rng = random.Random()
    for attempt in range(4):  # until two kills landed mid-run (a run can finish before its kill point)
        if reliability.faults_injected == 2:
            break
        load_synthetic(db, seed=10 + attempt)  # new data: a completed run registers a new version
        before = db.execute("select count(*) from ml.model_versions").fetchone()
        result_path = tmp_path / f"killed-{attempt}.json"
        proc = subprocess.Popen(
            [sys.executable, "-m", "trainer.cli", *TRAIN, "--seed", str(attempt + 5)],
            env={**os.environ, "PIPELINE_RESULT_PATH": str(result_path), "PIPELINE_REPORTS_DIR": str(tmp_path / "reports")},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        killed = kill_after(proc, rng.uniform(0.2, 0.8) * full_seconds)
        wait_for_sessions_to_end(db)
        registry_is_consistent(db)
        if result_path.exists():  # written atomically: whole or absent
            assert json.loads(result_path.read_text())["version"]
        if killed:
            reliability.fault()
        started = time.monotonic()
        retry = run_cli(*TRAIN, "--seed", str(attempt + 5), tmp_path=tmp_path)
        assert retry.code == 0, retry.stderr
        full_seconds = min(full_seconds, time.monotonic() - started)  # the first run paid for cold caches
        registry_is_consistent(db)
        after = db.execute("select count(*) from ml.model_versions").fetchone()
        assert before is not None and after is not None and after[0] >= before[0]
        assert champion_version(db) is not None
    assert reliability.faults_injected == 2, "every run finished before its kill point"

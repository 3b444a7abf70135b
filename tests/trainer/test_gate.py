"""The champion/challenger gate: worse candidates are kept out, tampered artifacts refused, races have one winner."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from mlp_common import registry
from mlp_common.exit_codes import ExitCode
from tests.trainer.trainer_helpers import DS, champion_version, load_synthetic, run_cli, shuffle_training_labels
from trainer.synthetic import load_training_set

pytestmark = pytest.mark.integration


def test_candidate_trained_on_shuffled_labels_is_not_promoted(db: psycopg.Connection, tmp_path: Path) -> None:
    table = load_synthetic(db)
    first = run_cli("train", "--ds", str(DS), "--auc-floor", "0.6", "--tolerance", "0.01", tmp_path=tmp_path)
    assert first.code == 0, first.stderr
    champion = first.result["version"]  # type: ignore[index]

    load_training_set(db, shuffle_training_labels(table))
    # Floor 0: only the comparison with the re-scored champion can keep the worse candidate out.
    second = run_cli("train", "--ds", str(DS), "--auc-floor", "0.0", "--tolerance", "0.01", tmp_path=tmp_path)
    assert second.code == 0, second.stderr  # "not promoted" is a normal outcome
    result = second.result
    assert result is not None
    assert result["promoted"] is False
    assert f"champion v{champion}" in result["reason"] and "worse" in result["reason"]
    assert result["metrics"]["candidate"]["roc_auc"] < result["metrics"]["champion"]["roc_auc"] - 0.05
    assert result["champion_after"] == champion == champion_version(db)
    decisions = db.execute("select version, promoted from ml.model_promotions order by decided_at").fetchall()
    assert decisions == [(champion, True), (result["version"], False)]
    assert Path(result["report_path"]).is_file()  # rejected versions get a report too


def test_corrupted_champion_artifact_is_refused(db: psycopg.Connection, tmp_path: Path) -> None:
    load_synthetic(db)
    first = run_cli("train", "--ds", str(DS), "--auc-floor", "0.6", "--tolerance", "0.0", tmp_path=tmp_path)
    assert first.code == 0, first.stderr
    db.execute("update ml.model_versions set artifact = overlay(artifact placing '\\xff'::bytea from 100 for 1)")

    second = run_cli("train", "--ds", str(DS), "--auc-floor", "0.6", "--tolerance", "0.0", "--seed", "3", tmp_path=tmp_path)
    assert second.code == ExitCode.ARTIFACT_INTEGRITY
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "integrity" in lines[0] and "Traceback" not in second.stderr
    assert db.execute("select count(*) from ml.model_versions").fetchone() == (1,)  # nothing registered
    assert champion_version(db) == first.result["version"]  # type: ignore[index]


def _register_copy(db: psycopg.Connection, of: int) -> int:
    """A second registered version with real metadata and artifact (copied), for promotion races."""
    source = registry.get_version(db, of)
    return registry.register(
        db,
        registry.NewVersion(
            as_of_date=source.as_of_date,
            data_window=source.data_window,
            row_counts=source.row_counts,
            class_balance=source.class_balance,
            features=source.features,
            metrics=source.metrics,
            score_reference=source.score_reference,
            code_version="race",
            artifact=registry.load_artifact(db, source),
        ),
    )


def test_concurrent_promotions_cannot_make_two_champions(db: psycopg.Connection, warehouse: dict[str, str], tmp_path: Path) -> None:
    from trainer.gate import Decision, apply

    load_synthetic(db, rows=2000)
    first = run_cli("train", "--ds", str(DS), "--auc-floor", "0.0", "--tolerance", "0.0", tmp_path=tmp_path)
    assert first.code == 0, first.stderr
    base = first.result["version"]  # type: ignore[index]

    for _round in range(10):
        current = champion_version(db)
        contenders = [_register_copy(db, base) for _ in range(4)]
        barrier = threading.Barrier(len(contenders))
        outcomes: dict[int, bool] = {}

        def contend(
            version: int,
            compared_with: int | None = current,
            barrier: threading.Barrier = barrier,
            outcomes: dict[int, bool] = outcomes,
        ) -> None:
            with psycopg.connect("") as conn:
                barrier.wait()
                outcomes[version] = apply(conn, version, Decision(True, "race test"), compared_with, "churn")[0]

        threads = [threading.Thread(target=contend, args=(v,)) for v in contenders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [v for v, won in outcomes.items() if won]
        assert len(winners) == 1, outcomes
        assert db.execute("select count(*) from ml.model_champion").fetchone() == (1,)
        assert champion_version(db) == winners[0]


def train_at_once(tmp_path: Path, seeds: tuple[str, str]) -> list[dict]:
    """Two `trainer train` processes for DS started together; their result JSONs."""
    procs = []
    for i, seed in enumerate(seeds):
        env = {**os.environ, "PIPELINE_REPORTS_DIR": str(tmp_path / "reports"), "PIPELINE_RESULT_PATH": str(tmp_path / f"race-{i}.json")}
        args = [sys.executable, "-m", "trainer.cli", "train", "--ds", str(DS), "--auc-floor", "0.5", "--tolerance", "0.0", "--seed", seed]
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    codes = [p.wait(timeout=300) for p in procs]
    assert codes == [0, 0], [p.stderr.read() for p in procs if p.stderr]
    return [json.loads((tmp_path / f"race-{i}.json").read_text()) for i in range(len(seeds))]


def test_two_identical_trainings_at_once_register_one_version_and_agree_on_the_champion(db: psycopg.Connection, tmp_path: Path) -> None:
    """Two runs of the same date (a backfill racing the scheduled run) train the same model: the
    second waits for the first's registration and reuses it, so both score with the same version."""
    load_synthetic(db, rows=2000)
    results = train_at_once(tmp_path, ("1", "1"))
    versions = db.execute("select version, artifact_sha256 from ml.model_versions order by 1").fetchall()
    assert len(versions) == 1, (versions, [(r["metrics"]["candidate"]["log_loss"], r["metrics"]["candidate"]["roc_auc"]) for r in results])
    assert sorted(r["reused_existing_version"] for r in results) == [False, True]
    assert {r["version"] for r in results} == {r["champion_after"] for r in results} == {champion_version(db)}
    assert all(r["promoted"] for r in results), [r["reason"] for r in results]


def test_two_trainers_racing_for_the_first_champion_leave_exactly_one(db: psycopg.Connection, tmp_path: Path) -> None:
    load_synthetic(db, rows=2000)
    results = train_at_once(tmp_path, ("1", "2"))
    champion = champion_version(db)
    assert db.execute("select count(*) from ml.model_champion").fetchone() == (1,)
    assert all(r["champion_after"] is not None for r in results)
    assert champion in {r["version"] for r in results}
    # Whatever the interleaving, successful promotions form one chain: each replaced the one before it.
    chain = db.execute("select version, previous_version from ml.model_promotions where promoted order by decided_at").fetchall()
    assert chain[0][1] is None
    for (previous, _), (_, replaced) in itertools.pairwise(chain):
        assert replaced == previous
    assert chain[-1][0] == champion

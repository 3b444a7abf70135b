"""Training end to end on the real warehouse: metrics, registry row, ONNX contract, reproducibility, report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import psycopg
import pytest

from mlp_common import registry
from tests.trainer.trainer_helpers import DS, champion_version, load_synthetic
from trainer.cli import run_train
from trainer.config import TrainConfig

pytestmark = pytest.mark.integration


def _train(db: psycopg.Connection, tmp_path: Path, **kwargs: object) -> dict:
    with psycopg.connect("") as conn:
        return run_train(conn, TrainConfig(ds=DS, auc_floor=0.6, tolerance=0.0, reports_dir=tmp_path / "reports", **kwargs))  # type: ignore[arg-type]


def test_candidate_beats_baseline_and_is_registered_with_its_provenance(
    db: psycopg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINE_CODE_VERSION", "trainer:test-1")
    load_synthetic(db, invocation_id="11111111-2222-3333-4444-555555555555")
    result = _train(db, tmp_path)

    candidate, baseline = result["metrics"]["candidate"], result["metrics"]["baseline"]
    assert candidate["roc_auc"] > baseline["roc_auc"] + 0.03
    assert candidate["pr_auc"] > baseline["pr_auc"]
    assert candidate["top_decile_lift"] > 1.5
    assert result["promoted"] is True and result["champion_after"] == result["version"]
    assert result["row_counts"] == {"total": 4000, "train": 3000, "holdout": 1000}

    version = registry.get_version(db, result["version"])
    assert version.dbt_invocation_id == "11111111-2222-3333-4444-555555555555"
    assert version.code_version == "trainer:test-1"
    assert version.as_of_date == DS
    assert version.data_window["holdout_cutoffs"] == ["2024-03-01"]
    assert version.data_window["train_cutoffs"] == ["2023-12-08", "2024-01-05", "2024-02-02"]
    assert version.class_balance["total"]["churned"] + version.class_balance["total"]["not_churned"] == 4000
    assert version.features[0] == {"name": "recency_days", "type": "numeric"}
    assert {"name": "region", "type": "categorical"} in version.features
    for name in ("candidate", "baseline"):
        stored = version.metrics["holdout"][name]
        assert set(stored) >= {"roc_auc", "pr_auc", "brier", "log_loss", "top_decile_lift", "calibration"}
        assert len(stored["calibration"]) == 10
    reference = version.score_reference
    assert len(reference["bin_edges"]) == 11 and len(reference["proportions"]) == 10
    assert reference["bin_edges"][0] == 0.0 and reference["bin_edges"][-1] == 1.0
    assert np.all(np.diff(reference["bin_edges"]) >= 0)
    assert sum(reference["proportions"]) == pytest.approx(1.0)

    report = Path(version.report_path or "")
    assert report.is_file() and report.parent == tmp_path / "reports" / "churn" / f"v{result['version']}"
    html = report.read_text()
    for png in ("roc.png", "precision_recall.png", "calibration.png", "score_distribution.png", "permutation_importance.png"):
        assert (report.parent / png).stat().st_size > 10_000
        assert png in html
    assert "baseline" in html and "candidate" in html


def test_artifact_follows_the_onnx_contract(db: psycopg.Connection, tmp_path: Path) -> None:
    table = load_synthetic(db)
    result = _train(db, tmp_path)
    version = registry.get_version(db, result["version"])
    artifact = registry.load_artifact(db, version)
    session = ort.InferenceSession(artifact, providers=["CPUExecutionProvider"])

    inputs = session.get_inputs()
    assert [i.name for i in inputs] == version.feature_names
    for spec, feature in zip(inputs, version.features, strict=True):
        assert spec.type == ("tensor(float)" if feature["type"] == "numeric" else "tensor(string)")
        assert spec.shape[1] == 1 and not isinstance(spec.shape[0], int)
    assert "probabilities" in [o.name for o in session.get_outputs()]

    # Score rows the way the predictor does: float32 with NaN for NULL, "__missing__" for NULL text.
    head = table.slice(0, 50)
    feeds = {}
    for feature in version.features:
        column = head.column(feature["name"])
        if feature["type"] == "numeric":
            feeds[feature["name"]] = np.asarray(column.cast("float32").to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, 1)
        else:
            values = [v if v is not None else "__missing__" for v in column.to_pylist()]
            feeds[feature["name"]] = np.asarray(values, dtype=object).reshape(-1, 1)
    (probabilities,) = session.run(["probabilities"], feeds)
    assert probabilities.shape == (50, 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_the_artifact_bytes_do_not_depend_on_the_order_skl2onnx_lists_opset_imports(db: psycopg.Connection, tmp_path: Path) -> None:
    """skl2onnx orders the imports differently from one process to another; the same model must
    still give the same bytes, or a re-run registers a duplicate version instead of reusing it."""
    import onnx

    from trainer.train import canonical_bytes

    load_synthetic(db)
    artifact = registry.load_artifact(db, registry.get_version(db, _train(db, tmp_path)["version"]))
    model = onnx.load_from_string(artifact)
    domains = [opset.domain for opset in model.opset_import]
    assert len(domains) >= 2 and domains == sorted(domains)
    swapped = list(model.opset_import)[::-1]
    del model.opset_import[:]
    model.opset_import.extend(swapped)
    assert model.SerializeToString() != artifact
    assert canonical_bytes(model) == artifact


def test_second_training_on_the_same_data_reproduces_the_metrics(db: psycopg.Connection, tmp_path: Path) -> None:
    load_synthetic(db)
    first = _train(db, tmp_path)
    second = _train(db, tmp_path)
    for name in ("candidate", "baseline"):
        assert second["metrics"][name] == first["metrics"][name]
    assert second["metrics"]["champion"]["roc_auc"] == first["metrics"]["candidate"]["roc_auc"]
    # Same data, same seed, same artifact: the re-run reuses the version instead of duplicating it.
    assert second["version"] == first["version"] and second["reused_existing_version"] is True
    assert second["promoted"] is True and champion_version(db) == first["version"]
    assert db.execute("select count(*) from ml.model_versions").fetchone() == (1,)


def test_another_seed_gives_a_new_version_compared_with_the_champion(db: psycopg.Connection, tmp_path: Path) -> None:
    load_synthetic(db)
    first = _train(db, tmp_path)
    second = _train(db, tmp_path, seed=7)
    assert second["version"] != first["version"]
    assert second["metrics"]["champion"]["version"] == first["version"]
    # the champion re-scored on the same holdout is exactly its own first evaluation
    assert second["metrics"]["champion"]["roc_auc"] == pytest.approx(first["metrics"]["candidate"]["roc_auc"], abs=1e-9)
    assert second["champion_before"] == first["version"]

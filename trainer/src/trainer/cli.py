"""`trainer` command line: `train` (fit, evaluate, register, gate) and `due` (is a retrain needed?).

Each step is its own module; this one only wires them in order and writes the result JSON.
"""

from __future__ import annotations

import time
from datetime import date, datetime
from typing import Annotated, Any

import numpy as np
import psycopg
import typer

from mlp_common import registry
from mlp_common.cli import run_app
from mlp_common.exit_codes import ExitCode, StageError
from mlp_common.logs import get_logger, set_context
from mlp_common.results import write_result
from mlp_common.warehouse import connect, lock_for_transaction
from trainer import data as data_module
from trainer import gate, report
from trainer.config import PERMUTATION_REPEATS, PERMUTATION_SAMPLE, TrainConfig, code_version
from trainer.data import onnx_inputs
from trainer.due import is_due
from trainer.evaluate import metrics, permutation_importance
from trainer.train import OnnxModel, baseline_scores, fit, score_reference, temporal_split, to_onnx, verify

STAGE = "trainer"
log = get_logger("trainer")
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, help="Train, evaluate, register and promote the churn model.")


def _parse_ds(ds: str) -> date:
    try:
        return datetime.strptime(ds, "%Y-%m-%d").date()
    except ValueError as exc:
        raise StageError(f"--ds must be a date YYYY-MM-DD, got {ds!r}", ExitCode.BAD_ARGUMENT) from exc


def _existing_version(conn: psycopg.Connection, cfg: TrainConfig, sha: str) -> int | None:
    """A version already registered for this date with the same artifact (a re-run): reuse it, do not duplicate."""
    row = conn.execute(
        "select min(version) from ml.model_versions where model_name = %s and as_of_date = %s and artifact_sha256 = %s",
        (cfg.model_name, cfg.ds, sha),
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def _class_balance(labels: np.ndarray) -> dict[str, Any]:
    positives = int(np.sum(labels))
    return {"churned": positives, "not_churned": int(len(labels) - positives), "churn_rate": float(positives / len(labels))}


def run_train(conn: psycopg.Connection, cfg: TrainConfig) -> dict[str, Any]:
    """The whole training run; returns the result JSON (raises StageError for the failure exits)."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    registry.ensure_schema(conn)
    conn.commit()

    t = time.perf_counter()
    dataset = data_module.load(conn, cfg.ds)
    conn.commit()
    timings["load_s"] = time.perf_counter() - t
    split = temporal_split(dataset, cfg.holdout_cutoffs)
    features = [f.as_registry() for f in dataset.features]
    log.info(
        "training rows loaded", extra={"fields": {"rows": dataset.rows, "train_rows": split.train.rows, "holdout_rows": split.holdout.rows}}
    )

    fitted = fit(split, cfg.seed)
    timings.update(fitted.timings)

    t = time.perf_counter()
    artifact = to_onnx(fitted.candidate, features)
    onnx_model = OnnxModel(artifact, features)
    candidate_scores, onnx_difference = verify(onnx_model, fitted.candidate, split.holdout)
    timings["onnx_export_and_verify_s"] = time.perf_counter() - t

    t = time.perf_counter()
    holdout_labels = split.holdout.labels
    scores = {"candidate": candidate_scores, "baseline": baseline_scores(fitted, split.holdout)}
    all_metrics: dict[str, Any] = {
        "candidate": metrics(holdout_labels, scores["candidate"]),
        "baseline": metrics(holdout_labels, scores["baseline"]),
    }
    reference = score_reference(onnx_model, split.train, cfg.seed)
    importance = permutation_importance(
        onnx_model.score_feeds,
        onnx_inputs(split.holdout.table, features),
        holdout_labels,
        cfg.seed,
        PERMUTATION_REPEATS,
        PERMUTATION_SAMPLE,
    )
    timings["evaluate_s"] = time.perf_counter() - t

    # The champion is checked (artifact verified, holdout re-scored) before anything is written.
    current = registry.champion(conn, cfg.model_name)
    champion_score = gate.rescore_champion(conn, current, split.holdout) if current is not None else None
    conn.commit()
    if champion_score is not None and champion_score.metrics is not None and champion_score.scores is not None:
        all_metrics["champion"] = {"version": champion_score.version, **champion_score.metrics}
        scores["champion"] = champion_score.scores
    decision = gate.decide(all_metrics["candidate"]["roc_auc"], cfg.auc_floor, cfg.tolerance, champion_score)

    data_window = {
        "as_of_date": str(cfg.ds),
        "first_cutoff": split.train_cutoffs[0],
        "last_cutoff": split.holdout_cutoffs[-1],
        "train_cutoffs": split.train_cutoffs,
        "holdout_cutoffs": split.holdout_cutoffs,
        "dbt_invocation_ids": dataset.dbt_invocation_ids,
    }
    row_counts = {"total": dataset.rows, "train": split.train.rows, "holdout": split.holdout.rows}
    class_balance = {
        "total": _class_balance(dataset.labels),
        "train": _class_balance(split.train.labels),
        "holdout": _class_balance(holdout_labels),
    }
    stored_metrics = {
        "holdout": all_metrics,
        "model": {"classifier": type(fitted.candidate.steps[-1][1]).__name__, "class_weight": fitted.class_weight, "seed": cfg.seed},
        "baseline_feature": fitted.baseline_feature,
        "onnx_max_abs_difference": onnx_difference,
        "permutation_importance": importance,
        "null_counts": dataset.null_counts,
    }
    sha = registry.sha256(artifact)
    # Two runs of the same date training at once register one version, not two identical ones:
    # the second waits here for the first's commit, then finds and reuses its version.
    lock_for_transaction(conn, "ml.model_versions", cfg.model_name, str(cfg.ds))
    version = _existing_version(conn, cfg, sha)
    reused = version is not None
    if version is None:
        version = registry.register(
            conn,
            registry.NewVersion(
                as_of_date=cfg.ds,
                data_window=data_window,
                row_counts=row_counts,
                class_balance=class_balance,
                features=features,
                metrics=stored_metrics,
                score_reference=reference,
                code_version=code_version(),
                artifact=artifact,
                dbt_invocation_id=",".join(dataset.dbt_invocation_ids) or None,
                model_name=cfg.model_name,
            ),
        )
    conn.commit()
    set_context(model_version=version)

    t = time.perf_counter()
    summary = {
        "data window": f"cutoffs {data_window['first_cutoff']} … {data_window['last_cutoff']} (label windows closed by {cfg.ds})",
        "training cutoffs": split.train_cutoffs,
        "holdout cutoffs": split.holdout_cutoffs,
        "rows": row_counts,
        "churn rate (train / holdout)": f"{class_balance['train']['churn_rate']:.1%} / {class_balance['holdout']['churn_rate']:.1%}",
        "class weighting": fitted.class_weight or "none (classes balanced enough)",
        "features": [f"{f['name']} ({f['type']})" for f in features],
        "NULLs per feature": {k: v for k, v in dataset.null_counts.items() if v},
        "baseline feature": fitted.baseline_feature or "none found: baseline is the training churn rate",
        "ONNX vs scikit-learn max |difference|": f"{onnx_difference:.2e}",
        "dbt invocation id(s)": dataset.dbt_invocation_ids,
        "code version": code_version(),
        "artifact sha256": sha,
    }
    report_path = report.write(
        report.ReportInput(
            cfg.model_name,
            version,
            str(cfg.ds),
            holdout_labels,
            scores,
            all_metrics,
            importance,
            decision.reason,
            decision.promote,
            summary,
        ),
        cfg.reports_dir,
    )
    registry.set_report_path(conn, version, str(report_path), model_name=cfg.model_name)
    conn.commit()
    timings["report_s"] = time.perf_counter() - t

    promoted, reason = gate.apply(conn, version, decision, None if current is None else current.version, cfg.model_name)
    conn.commit()
    after = registry.champion(conn, cfg.model_name)
    conn.commit()
    timings["total_s"] = time.perf_counter() - started
    return {
        "ds": str(cfg.ds),
        "model_name": cfg.model_name,
        "version": version,
        "reused_existing_version": reused,
        "promoted": promoted,
        "reason": reason,
        "champion_before": None if current is None else current.version,
        "champion_after": None if after is None else after.version,
        "metrics": {name: {k: v for k, v in m.items() if k != "calibration"} for name, m in all_metrics.items()},
        "report_path": str(report_path),
        "row_counts": row_counts,
        "class_balance": class_balance["total"],
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }


@app.command()
def train(
    ds: Annotated[str, typer.Option(help="Logical date YYYY-MM-DD: train on snapshots whose label window closed by then.")],
    auc_floor: Annotated[float, typer.Option(help="Minimum holdout ROC AUC for promotion.")] = 0.6,
    tolerance: Annotated[
        float, typer.Option(help="How much worse than the re-scored champion the candidate may be and still be promoted.")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Random seed: same data and seed give the same model and metrics.")] = 42,
) -> None:
    """Fit on earlier cutoffs, evaluate on the latest, register the ONNX artifact and run the champion gate."""
    day = _parse_ds(ds)
    set_context(ds=str(day))
    cfg = TrainConfig(ds=day, auc_floor=auc_floor, tolerance=tolerance, seed=seed)
    with connect(STAGE) as conn:
        result = run_train(conn, cfg)
    write_result(result)
    if result["champion_after"] is None and not result["promoted"]:
        raise StageError(
            f"no champion exists and version {result['version']} was not promoted: {result['reason']}", ExitCode.BELOW_FLOOR_NO_CHAMPION
        )


@app.command()
def due(
    ds: Annotated[str, typer.Option(help="Logical date YYYY-MM-DD.")],
    cadence_days: Annotated[int, typer.Option(help="Retrain when the champion's data is this many days older than D.")] = 7,
) -> None:
    """Decide whether today's run trains: no champion, champion too old, or drift in the latest batch."""
    day = _parse_ds(ds)
    set_context(ds=str(day))
    with connect(STAGE) as conn:
        result = is_due(conn, day, cadence_days)
    write_result(result)


def main() -> None:
    run_app(app, STAGE)


if __name__ == "__main__":
    main()

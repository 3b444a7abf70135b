"""Temporal split, fitting, ONNX export (verified against sklearn) and the training score reference.

The split is by time, never at random: the model is fitted on the earlier cutoffs and judged on the
latest labelled cutoff(s), which is how it will be used (scoring a future it has not seen).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
from sklearn.pipeline import Pipeline

from mlp_common.exit_codes import ExitCode, StageError
from trainer.config import IMBALANCE_THRESHOLD, ONNX_OUTPUT, ONNX_TOLERANCE, SCORE_REFERENCE_SAMPLE
from trainer.data import TrainingData, onnx_inputs
from trainer.features import NUMERIC, baseline_feature, baseline_pipeline, candidate_pipeline, class_weight


@dataclass
class Split:
    train: TrainingData
    holdout: TrainingData
    train_cutoffs: list[str]
    holdout_cutoffs: list[str]


def temporal_split(data: TrainingData, holdout_cutoffs: int) -> Split:
    """Hold out the latest `holdout_cutoffs` cutoff dates; both parts must hold both classes."""
    distinct = np.unique(data.cutoffs)
    if len(distinct) <= holdout_cutoffs:
        raise StageError(
            f"only {len(distinct)} labelled cutoff date(s) ({', '.join(str(d) for d in distinct)}); a temporal holdout of "
            f"{holdout_cutoffs} needs at least {holdout_cutoffs + 1}, so there is nothing left to train on",
            ExitCode.EMPTY_TRAINING_SET,
        )
    first_holdout = distinct[-holdout_cutoffs]
    mask = data.cutoffs >= first_holdout
    split = Split(
        data.subset(~mask), data.subset(mask), [str(d) for d in distinct[:-holdout_cutoffs]], [str(d) for d in distinct[-holdout_cutoffs:]]
    )
    for part, name in ((split.train, "training"), (split.holdout, "holdout")):
        classes = np.unique(part.labels)
        if len(classes) < 2:
            only = "churned" if classes[0] == 1 else "not churned"
            raise StageError(
                f"the {name} part ({part.rows} rows) has one class only (all {only}); cannot fit or evaluate a classifier",
                ExitCode.SINGLE_CLASS,
            )
    return split


@dataclass
class Fitted:
    candidate: Pipeline
    baseline: Pipeline | None
    baseline_feature: str | None
    class_weight: str | None
    training_churn_rate: float
    timings: dict[str, float] = field(default_factory=dict)


def fit(split: Split, seed: int) -> Fitted:
    """Fit the candidate and the recency baseline on the training part (seeded: same data, same model)."""
    train = split.train
    weight = class_weight(float(np.mean(train.labels)), IMBALANCE_THRESHOLD)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    candidate = candidate_pipeline(train.features, seed, weight).fit(train.table, train.labels)
    timings["fit_candidate_s"] = time.perf_counter() - started
    recency = baseline_feature(train.features)
    baseline = None
    if recency is not None:
        started = time.perf_counter()
        baseline = baseline_pipeline(recency, seed, weight).fit(train.table.select([recency]), train.labels)
        timings["fit_baseline_s"] = time.perf_counter() - started
    return Fitted(candidate, baseline, recency, weight, float(np.mean(train.labels)), timings)


def baseline_scores(fitted: Fitted, data: TrainingData) -> np.ndarray:
    """Baseline churn probabilities; without a recency feature, the training churn rate for everyone."""
    if fitted.baseline is None or fitted.baseline_feature is None:
        return np.full(data.rows, fitted.training_churn_rate)
    return np.asarray(fitted.baseline.predict_proba(data.table.select([fitted.baseline_feature]))[:, 1])


def _patch_skl2onnx_hist_gradient_boosting() -> None:
    """skl2onnx 1.20 passes a Python bool for leaf nodes' `nodes_missing_value_tracks_true` with
    scikit-learn 1.9, which onnx rejects ("Expected an int, got a boolean"). Coerce it to int; the
    exported graph is then checked against sklearn's own predictions before it is registered."""
    from skl2onnx.common import tree_ensemble

    if getattr(tree_ensemble.add_node, "_mlp_patched", False):
        return
    original = tree_ensemble.add_node

    def add_node(*args: Any, nodes_missing_value_tracks_true: Any = 0, **kwargs: Any) -> Any:
        return original(*args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs)

    add_node._mlp_patched = True  # type: ignore[attr-defined]
    tree_ensemble.add_node = add_node


def to_onnx(candidate: Pipeline, features: list[dict[str, str]]) -> bytes:
    """ONNX bytes following the artifact contract: one [None, 1] input per feature, `probabilities` [None, 2]."""
    _patch_skl2onnx_hist_gradient_boosting()
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    initial_types = [(f["name"], FloatTensorType([None, 1]) if f["type"] == NUMERIC else StringTensorType([None, 1])) for f in features]
    model = convert_sklearn(
        candidate,
        name="churn",
        initial_types=initial_types,
        options={id(candidate.steps[-1][1]): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return canonical_bytes(model)


def canonical_bytes(model: Any) -> bytes:
    """The ONNX model serialised with its opset imports in domain order.

    skl2onnx lists the imports in an order that differs from one process to the next, so the same
    fitted model gave two artifacts (two sha256s): a re-run, or two runs of the same date, then
    registered a second, identical version instead of reusing the first, and could promote it
    while the first run's shards were still scoring.
    """
    imports = sorted(model.opset_import, key=lambda opset: (opset.domain, opset.version))
    del model.opset_import[:]
    model.opset_import.extend(imports)
    return bytes(model.SerializeToString())


class OnnxModel:
    """An ONNX artifact ready to score Arrow feature tables (candidate and champion alike)."""

    def __init__(self, artifact: bytes, features: list[dict[str, str]]) -> None:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(artifact, options, providers=["CPUExecutionProvider"])
        self.features = features
        names = [i.name for i in self.session.get_inputs()]
        if names != [f["name"] for f in features]:
            raise StageError(f"ONNX inputs {names} do not match the registered features", ExitCode.ARTIFACT_INTEGRITY)

    def score_feeds(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        (probabilities,) = self.session.run([ONNX_OUTPUT], feeds)
        return np.asarray(probabilities[:, 1], dtype=np.float64)

    def score(self, data: TrainingData) -> np.ndarray:
        return self.score_feeds(onnx_inputs(data.table, self.features))


def verify(model: OnnxModel, candidate: Pipeline, holdout: TrainingData) -> tuple[np.ndarray, float]:
    """Score the holdout with both runtimes; refuse the artifact unless they agree. Returns ONNX scores."""
    onnx_scores = model.score(holdout)
    sklearn_scores = np.asarray(candidate.predict_proba(holdout.table)[:, 1])
    max_difference = float(np.max(np.abs(onnx_scores - sklearn_scores))) if len(onnx_scores) else 0.0
    if not max_difference <= ONNX_TOLERANCE:
        raise StageError(
            f"the exported ONNX model disagrees with scikit-learn on the holdout (max |difference| "
            f"{max_difference:.2e} > {ONNX_TOLERANCE:g}); not registering it",
            ExitCode.ARTIFACT_INTEGRITY,
        )
    return onnx_scores, max_difference


def score_reference(model: OnnxModel, train: TrainingData, seed: int) -> dict[str, list[float]]:
    """Decile bins of the model's scores on (a seeded sample of) its training rows, for the predictor's PSI.

    The outer edges are 0 and 1, so every future probability falls into a bin.
    """
    n = train.rows
    if n > SCORE_REFERENCE_SAMPLE:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=SCORE_REFERENCE_SAMPLE, replace=False))
        feeds = {k: v[rows] for k, v in onnx_inputs(train.table, model.features).items()}
    else:
        feeds = onnx_inputs(train.table, model.features)
    scores = np.clip(model.score_feeds(feeds), 0.0, 1.0)
    edges = np.quantile(scores, np.linspace(0.0, 1.0, 11))
    edges[0], edges[-1] = 0.0, 1.0
    edges = np.maximum.accumulate(edges)
    counts, _ = np.histogram(scores, bins=edges)
    return {"bin_edges": [float(e) for e in edges], "proportions": [float(c) / len(scores) for c in counts]}

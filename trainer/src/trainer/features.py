"""Feature discovery and the two model pipelines (baseline and candidate).

Discovery follows the rule shared with the predictor: every column of the training set except the
keys, the label columns and `_`-prefixed metadata; numeric SQL types are numeric features, text and
boolean are categorical. Categorical values reach the model as text (`col::text`, NULL ->
"__missing__"), numeric ones as float32 with NaN for NULL: exactly the ONNX input convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from mlp_common.exit_codes import ExitCode, StageError
from mlp_common.features import CATEGORICAL, NUMERIC, Column, feature_columns, table_columns
from trainer.config import BASELINE_FEATURE_CANDIDATES, HGB_PARAMS, REQUIRED_COLUMNS

__all__ = ["CATEGORICAL", "NUMERIC", "Feature", "discover", "table_columns"]


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str  # NUMERIC | CATEGORICAL
    sql_type: str

    def as_registry(self) -> dict[str, str]:
        return {"name": self.name, "type": self.kind}


def discover(columns: list[Column], table: str) -> list[Feature]:
    """The feature list in table order (the shared contract's rule); MISSING_FEATURES when keys,
    label or every feature is absent, SCHEMA_MISMATCH for a feature column of an unsupported type."""
    names = {c.name for c in columns}
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise StageError(f"{table} lacks required column(s) {', '.join(missing)}", ExitCode.MISSING_FEATURES)
    candidates = feature_columns(columns)
    unsupported = [f"{c.name} ({c.sql_type})" for c in candidates if c.kind is None]
    if unsupported:
        raise StageError(
            f"{table} has feature column(s) of a type no feature may have (numeric, text or boolean only): {', '.join(unsupported)}",
            ExitCode.SCHEMA_MISMATCH,
        )
    features = [Feature(c.name, c.kind, c.sql_type) for c in candidates if c.kind is not None]
    if not features:
        raise StageError(f"{table} has no feature columns (only keys, label and _ metadata)", ExitCode.MISSING_FEATURES)
    return features


def baseline_feature(features: list[Feature]) -> str | None:
    """The recency feature the baseline uses, or None (then the baseline is the class prior)."""
    numeric = [f.name for f in features if f.kind == NUMERIC]
    for candidate in BASELINE_FEATURE_CANDIDATES:
        if candidate in numeric:
            return candidate
    return next((n for n in numeric if "recency" in n or n.startswith("days_since_last")), None)


def class_weight(positive_share: float, threshold: float) -> str | None:
    """ "balanced" when the minority class is rarer than `threshold`, else None (keep probabilities calibrated)."""
    return "balanced" if min(positive_share, 1.0 - positive_share) < threshold else None


def candidate_pipeline(features: list[Feature], seed: int, weight: str | None) -> Pipeline:
    """Imputation and one-hot encoding in a ColumnTransformer, then gradient boosting.

    Trees need no scaling, and leaving it out keeps the ONNX graph's float32 arithmetic identical to
    sklearn's split decisions. Columns are selected by name, so the ONNX graph gets one input per feature.
    """
    numeric = [f.name for f in features if f.kind == NUMERIC]
    categorical = [f.name for f in features if f.kind == CATEGORICAL]
    transformers: list[tuple[str, object, list[str]]] = []
    if numeric:
        transformers.append(("numeric", SimpleImputer(strategy="median", keep_empty_features=True), numeric))
    if categorical:
        transformers.append(("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32), categorical))
    classifier = HistGradientBoostingClassifier(random_state=seed, class_weight=weight, **HGB_PARAMS)  # type: ignore[arg-type]
    return Pipeline([("prepare", ColumnTransformer(transformers, sparse_threshold=0.0)), ("classifier", classifier)])


def baseline_pipeline(feature: str, seed: int, weight: str | None) -> Pipeline:
    """Logistic regression on log(1 + recency): the "who has not bought lately" rule, fitted."""
    prepare = ColumnTransformer(
        [
            (
                "recency",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="median")),
                        ("log", FunctionTransformer(lambda x: np.log1p(np.clip(x, 0, None)))),
                        ("scale", StandardScaler()),
                    ]
                ),
                [feature],
            )
        ]
    )
    return Pipeline([("prepare", prepare), ("classifier", LogisticRegression(random_state=seed, class_weight=weight))])
